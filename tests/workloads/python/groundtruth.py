"""Allocates known amounts from known functions, for oomtrace's Python frames.

`groundtruth.py tracemalloc` runs the same code under tracemalloc and prints, as JSON, the bytes
tracemalloc holds at the end per (function's line), counting only blocks of 512 bytes or more:
CPython's small-object allocator (pymalloc) serves smaller requests from its arenas, larger ones
go to malloc, where oomtrace sees them with or without a layer for pymalloc itself. The lines
below allocate almost only such large blocks (one list object aside), so both counts describe
the same blocks. `groundtruth.py plain` runs the code alone and leaves without freeing anything.
"""
import json
import os
import sys


def keep_bytes():
    return [bytes(4096) for _ in range(2000)]  # KEEP_BYTES


def keep_buffers():
    out = []
    for _ in range(60):
        out.append(bytearray(100_000))  # KEEP_BUFFERS
    return out


def main():
    mode = sys.argv[1]
    if mode == "tracemalloc":
        import tracemalloc

        tracemalloc.start(1)
    held = (keep_bytes(), keep_buffers())
    if mode == "tracemalloc":
        snap = tracemalloc.take_snapshot()
        by_line = {}
        for t in snap.traces:
            frame = t.traceback[0]
            if frame.filename == __file__ and t.size >= 512:
                by_line[frame.lineno] = by_line.get(frame.lineno, 0) + t.size
        print(json.dumps(by_line))
    else:
        print("kept", len(held[0]), len(held[1]), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # No teardown: what is held stays outstanding for the report.
    os._exit(0)


main()
