"""Started without any flag; oomtrace attaches to it by pid. It says "ready PID", waits for a
line on stdin, then keeps 64 KiB buffers from `grow_cache`, prints what it did, and goes on
serving for a second (a process attached by pid is a running service: its code objects are read
from its memory while it lives)."""
import os
import sys
import time


def grow_cache(n):
    cache = []
    for i in range(n):
        cache.append(bytearray(65536))  # GROW
        if i % 50 == 0:
            print("batch", i, flush=True)
    return cache


print("ready", os.getpid(), flush=True)
sys.stdin.readline()
kept = grow_cache(200)
print("kept", len(kept), sum(len(b) for b in kept), flush=True)
time.sleep(1)
os._exit(0)
