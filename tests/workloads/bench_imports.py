# A process with many mapped modules (`cargo xtask bench stacks`): imports every extension
# module of the interpreter's lib-dynload (46 in Debian's python3.11, which map 30 more
# libraries), prints how many, then holds them for argv[1] seconds (0 by default) so the
# tracer's maps can be read while the process lives.
import glob, importlib, os, sys, time

n = 0
for p in sorted(glob.glob(os.path.join(sys.base_prefix, "lib", "python3*", "lib-dynload", "*.so"))):
    try:
        importlib.import_module(os.path.basename(p).split(".")[0])
        n += 1
    except Exception:
        pass
print(n, flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
