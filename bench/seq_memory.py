"""Peak memory of training a recurrent layer that outputs every step, by BPTT memory mode.

    python bench/seq_memory.py [--T 10000 100000] [--batch 4] [--hidden 64] [--kinds lstm]

Each row is one child process: it builds Input (T, F) -> RNN/LSTM/GRU(H, return_sequences=True)
-> Dense(O) with an mse loss on every step, makes the data, reads its peak RSS
(resource.getrusage(RUSAGE_SELF).ru_maxrss), runs one fit epoch (one batch of `batch`
sequences), and reads it again: the difference is what training added. Beside it: the sequence
buffer B·T·H·4 bytes (float32), the peak BPTT workspace the layer reports, and the difference in
units of the sequence buffer.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, resource, sys
import numpy as np
import chainrule as cr
kind, memory, T, B, H, F, O, k = sys.argv[1:9]
T, B, H, F, O, k = int(T), int(B), int(H), int(F), int(O), int(k)
cell = {"rnn": cr.RNN, "lstm": cr.LSTM, "gru": cr.GRU}[kind]
model = cr.Model([cell(F, H, return_sequences=True), cr.Dense(H, O)], loss="mse",
                 dtype="float32", seed=0)
rng = np.random.default_rng(0)
X = rng.standard_normal((B, T, F), dtype=np.float32)  # no float64 temporary to raise the peak
Y = rng.standard_normal((B, T, O), dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model.fit(X, Y, epochs=1, batch_size=B, bptt_memory=memory, bptt_steps=k or None)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"added": (after - before) * 1024,
                  "workspace": model.bptt_workspace()["peak_workspace_bytes"]}))
"""


def measure(kind: str, memory: str, T: int, B: int, H: int, F: int, O: int, k: int,
            env: Dict[str, str]) -> Dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, memory, str(T), str(B), str(H),
                          str(F), str(O), str(k)], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--features", type=int, default=8, help="F = O")
    p.add_argument("--kinds", nargs="+", default=["rnn", "lstm", "gru"])
    p.add_argument("--bptt-steps", type=int, default=1000, help="the truncated rows' k")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--package-dir", default=os.path.join(os.path.dirname(HERE), "python"),
                   help="where the chainrule package to measure lies (default: this clone's)")
    args = p.parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [args.package_dir] +
        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    B, H, F = args.batch, args.hidden, args.features
    rows = []
    print(f"one fit epoch, B = {B}, H = {H}, F = O = {F}, float32; peak RSS added "
          "(ru_maxrss after - before)")
    print(f"{'cell':>5} {'T':>7} {'memory':>6} {'bptt_steps':>10} {'added MiB':>10} "
          f"{'workspace MiB':>14} {'seq buf MiB':>12} {'added / seq':>11}")
    for kind in args.kinds:
        for T in args.T:
            for memory, k in (("all", 0), ("sqrt", 0), ("sqrt", args.bptt_steps)):
                r = measure(kind, memory, T, B, H, F, F, k, env)
                seq = B * T * H * 4
                row = {"kind": kind, "T": T, "memory": memory, "bptt_steps": k, **r,
                       "seq_bytes": seq}
                rows.append(row)
                print(f"{kind:>5} {T:>7} {memory:>6} {k or '-':>10} {r['added'] / 2**20:>10.1f} "
                      f"{r['workspace'] / 2**20:>14.2f} {seq / 2**20:>12.1f} "
                      f"{r['added'] / seq:>11.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
