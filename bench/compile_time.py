"""Cold-compile and cached-load time of the first `kernels.train` call.

Run by hand:  .venv/bin/python bench/compile_time.py [--repeat N]

For each dtype (float64, float32) it starts a fresh Python process with NUMBA_CACHE_DIR set to
an empty temporary folder and times the first `kernels.train` call (numba compiles every jitted
function it needs and writes them to that cache). A second fresh process with the same, now
filled, folder times the same call again: that is the cached load. Each process also times a
second identical call (steady state, nothing left to compile or load) and the first calls on
the other two benchmark networks (other activations and loss, which should reuse the same
compiled kernels because choices are passed as integer codes).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import numba
t_numba = time.perf_counter() - t0
t0 = time.perf_counter()
import kernels
t_import = time.perf_counter() - t0
dtype = sys.argv[1]
rng = np.random.default_rng(0)
Xa = rng.uniform(-1, 1, (64, 2)); ya = ((Xa[:, 0] > 0) ^ (Xa[:, 1] > 0)).astype(np.int64)
Xb = rng.uniform(0, 1, (64, 64)); yb = rng.integers(0, 10, 64)
Xc = rng.standard_normal((64, 784)); yc = rng.integers(0, 10, 64)
nets = {
    "a": (Xa, ya, dict(layers=[2, 8, 1], activation="sigmoid", output_activation="sigmoid",
                       loss="mse", learning_rate=0.5)),
    "b": (Xb, yb, dict(layers=[64, 128, 64, 10], activation="tanh",
                       output_activation="softmax", loss="cross_entropy", learning_rate=0.02)),
    "c": (Xc, yc, dict(layers=[784, 256, 128, 10], activation="relu",
                       output_activation="softmax", loss="cross_entropy", learning_rate=0.001)),
}
def call(net, mode="minibatch"):
    X, y, kw = nets[net]
    t0 = time.perf_counter()
    r = kernels.train(X, y, batch_mode=mode, batch_size=16, epochs=2, shuffle=False,
                      dtype=dtype, **kw)
    assert r.epochs_done == 2
    return time.perf_counter() - t0
out = {"numba_import": t_numba, "kernels_import": t_import}
out["first_a"] = call("a")
out["second_a"] = call("a")
out["first_b"] = call("b")
out["first_c"] = call("c")
out["first_a_sgd"] = call("a", "sgd")
out["first_a_full"] = call("a", "full")
print("RESULT " + json.dumps(out))
"""


def run_child(dtype, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    p = subprocess.run([sys.executable, "-c", CHILD, dtype], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child failed (exit {p.returncode}):\n{p.stdout}\n{p.stderr}")


def fmt_t(t):
    return f"{t:.2f}s" if t >= 1 else f"{t * 1e3:.1f}ms"


def cache_size(d):
    files, size = 0, 0
    for dirpath, _, names in os.walk(d):
        for nm in names:
            files += 1
            size += os.path.getsize(os.path.join(dirpath, nm))
    return files, size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=1,
                    help="cold/warm pairs per dtype (median reported when > 1)")
    ap.add_argument("--dtypes", default="float64,float32")
    args = ap.parse_args()

    import numba
    print(f"python {sys.version.split()[0]}  numba {numba.__version__}  "
          f"cpus {os.cpu_count()}  load average {os.getloadavg()[0]:.2f}")
    print("Each number comes from a fresh process; 'cold' = empty NUMBA_CACHE_DIR, "
          "'cached' = a new process on the cache the cold process filled.")
    print("first train = first kernels.train call (net 2-8-1 sigmoid/mse, minibatch, "
          "2 epochs on 64 rows); second = the same call again; "
          "+b/+c/+sgd/+full = the first call on the other nets / batch modes after that.")
    print()
    hdr = (f"{'dtype':8s} {'cache':7s} {'import numba':>12s} {'import kernels':>14s} "
           f"{'first train':>11s} {'second':>8s} {'+b tanh/ce':>10s} {'+c relu/ce':>10s} "
           f"{'+sgd':>7s} {'+full':>7s} {'cache files':>12s}")
    print(hdr)
    keys = ["numba_import", "kernels_import", "first_a", "second_a", "first_b", "first_c",
            "first_a_sgd", "first_a_full"]
    for dtype in args.dtypes.split(","):
        rows = {"cold": [], "cached": []}
        files = None
        for _ in range(args.repeat):
            d = tempfile.mkdtemp(prefix="descent-numba-cache-")
            try:
                rows["cold"].append(run_child(dtype, d))
                files = cache_size(d)
                rows["cached"].append(run_child(dtype, d))
            finally:
                shutil.rmtree(d, ignore_errors=True)
        for state in ("cold", "cached"):
            rs = rows[state]
            med = {k: sorted(r[k] for r in rs)[len(rs) // 2] for k in keys}
            cf = f"{files[0]} ({files[1] / 1e6:.1f} MB)" if state == "cold" and files else ""
            print(f"{dtype:8s} {state:7s} {fmt_t(med['numba_import']):>12s} "
                  f"{fmt_t(med['kernels_import']):>14s} {fmt_t(med['first_a']):>11s} "
                  f"{fmt_t(med['second_a']):>8s} {fmt_t(med['first_b']):>10s} "
                  f"{fmt_t(med['first_c']):>10s} {fmt_t(med['first_a_sgd']):>7s} "
                  f"{fmt_t(med['first_a_full']):>7s} {cf:>12s}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
