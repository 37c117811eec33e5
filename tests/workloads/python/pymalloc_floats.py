"""Keeps N floats (24 bytes each, from pymalloc) alive in a list made by one known function, then
leaves without finalizing (os._exit), so what is outstanding at exit is what it kept.

    python3 pymalloc_floats.py N plain   # under oomtrace
    python3 pymalloc_floats.py N trace   # with tracemalloc: prints the ground truth as JSON

The trace run prints {"floats": bytes traced on the FLOATS line, "list": on the LIST line,
"total": everything traced since start (run it with -X tracemalloc to trace from startup)}."""
import json
import os
import sys

N = int(sys.argv[1])
TRACE = sys.argv[2] == "trace"


def keep_floats(n):
    out = [None] * n  # LIST
    for i in range(n):
        out[i] = i * 1.5  # FLOATS
    return out


kept = keep_floats(N)
if TRACE:
    import tracemalloc

    snap = tracemalloc.take_snapshot()
    by_line = {}
    for stat in snap.statistics("lineno"):
        frame = stat.traceback[0]
        if frame.filename == __file__:
            by_line[frame.lineno] = stat.size
    source = open(__file__).read().splitlines()
    line = lambda marker: next(i + 1 for i, l in enumerate(source) if l.endswith(marker))
    print(json.dumps({
        "floats": by_line.get(line("# FLOATS"), 0),
        "list": by_line.get(line("# LIST"), 0),
        "total": tracemalloc.get_traced_memory()[0],
    }))
sys.stdout.flush()
os._exit(0)
