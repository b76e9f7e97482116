"""A steady stretch of net c training to profile: kernels.train on 784-256-128-10 (10000
random rows, no shuffling, eval every epoch) with the BLAS threads the worker would set,
after a one-epoch warm-up; prints ms per epoch. Meant to run under a sampling profiler:

    perf record -o /tmp/perf.data .venv/bin/python bench/net_c_epochs.py float32 full 2 40
    perf report -i /tmp/perf.data --no-children --sort dso,sym -g none

Arguments: dtype, batch (a number or full), threads, epochs.
"""
import os
import sys
import time

# bench/kernels.py would shadow the package: import it from the checkout's root.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(_HERE)] + [p for p in sys.path
                                         if os.path.abspath(p or ".") != _HERE]
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import kernels  # noqa: E402


def main() -> None:
    """Train net c for the given epochs and print the time per epoch."""
    dtype, batch, threads, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    n = 10000
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 784)).astype(dtype)
    labels = rng.integers(0, 10, n)
    spec = dict(layers=[784, 256, 128, 10], activation="relu", output_activation="softmax",
                loss="cross_entropy", learning_rate=0.001, shuffle=False, dtype=dtype)
    if batch == "full":
        spec.update(batch_mode="full")
    else:
        spec.update(batch_mode="minibatch", batch_size=int(batch))
    blas = kernels.blas_threads_for(threads, layers=spec["layers"],
                                    batch_mode=spec["batch_mode"],
                                    batch_size=spec.get("batch_size", 32), rows=n)
    with threadpool_limits(blas, user_api="blas"):
        kernels.train(X, labels, threads=threads, epochs=1, **spec)
        started = time.perf_counter()
        kernels.train(X, labels, threads=threads, epochs=epochs, **spec)
        print(f"{(time.perf_counter() - started) / epochs * 1e3:.1f} ms/epoch")


if __name__ == "__main__":
    main()
