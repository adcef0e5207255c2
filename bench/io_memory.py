"""Peak memory of chainrule.save and chainrule.load on a large model, one child process each.

The model is Dense layers of float32 with an Adam state (one step taken, so both moment buffers
are in the file): the file is about 3× the weights. Each measurement runs in a fresh process;
the figure is the resident-set peak during the call (VmHWM, reset just before it through
/proc/self/clear_refs) less the resident set just before it; "kept" is what is still resident
after it (for load, mostly the model it returns). Linux only.

    PYTHONPATH=python python bench/io_memory.py            # ~270 MB of weights, ~0.8 GB file
    PYTHONPATH=python python bench/io_memory.py --width 2048 --layers 4 --folder /var/tmp
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

CHILD = textwrap.dedent("""
    import gc, json, os, sys, time
    import numpy as np
    import chainrule as cr

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(field)

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS

    what, path, width, layers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if what == "save":
        model = cr.Model([cr.Dense(width, width) for _ in range(layers)],
                         optimizer=cr.Adam(lr=1e-4), seed=0)
        x = np.ones((4, width), np.float32)
        model.forward(x)
        model.backward(x)
        model.step()
        call = lambda: model.save(path)
    else:
        call = lambda: cr.load(path)
    gc.collect()
    before = status("VmRSS")
    reset_peak()
    t = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - t
    peak = status("VmHWM")
    print(json.dumps({"before": before, "peak": peak, "after": status("VmRSS"),
                      "seconds": seconds, "file": os.path.getsize(path)}))
""")


def measure(what: str, path: str, width: int, layers: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, what, path, str(width),
                          str(layers)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--folder", default=None, help="where the file goes (not a tmpfs: its pages "
                   "would not show in the resident set)")
    args = p.parse_args()
    weights = args.width * (args.width + 1) * args.layers * 4
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        path = os.path.join(folder, "big.safetensors")
        rows = [("save", measure("save", path, args.width, args.layers)),
                ("load", measure("load", path, args.width, args.layers))]
    mb = 1e6
    print(f"weights {weights / mb:.0f} MB, file {rows[0][1]['file'] / mb:.0f} MB")
    print(f"{'call':6}{'RSS before':>12}{'peak':>10}{'peak - before':>15}{'÷ file':>8}"
          f"{'kept':>9}{'seconds':>9}")
    for what, r in rows:
        extra, kept = r["peak"] - r["before"], r["after"] - r["before"]
        print(f"{what:6}{r['before'] / mb:>9.0f} MB{r['peak'] / mb:>7.0f} MB{extra / mb:>12.0f} MB"
              f"{extra / r['file']:>8.2f}{kept / mb:>6.0f} MB{r['seconds']:>9.2f}")


if __name__ == "__main__":
    main()
