"""Calls the C extension `grabber` (built by the test, on sys.path[0]) from `load_images`."""
import os
import sys

sys.path.insert(0, sys.argv[1])
import grabber  # noqa: E402


def load_images():
    for _ in range(40):
        grabber.grab(300_000)  # GRAB


load_images()
print("grabbed", file=sys.stderr, flush=True)
os._exit(0)
