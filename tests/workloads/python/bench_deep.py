"""The cost of Python frames per traced allocation: `bench_deep.py N` recurses N frames deep,
then makes 200000 allocations of 1000 bytes (each freed soon after)."""
import os
import sys


def deep(n):
    if n:
        return deep(n - 1)
    keep = []
    for _ in range(200_000):
        keep.append(bytes(1000))
        if len(keep) > 100:
            keep.clear()
    return 0


deep(int(sys.argv[1]))
os._exit(0)
