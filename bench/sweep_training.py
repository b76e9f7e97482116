"""The training inside bench/sweep.py's grid, without the service: the 48 configurations'
``kernels.train`` calls (50 epochs, one BLAS thread, eval_every = epochs) timed one after
another in one process, their sum and the sum per batch size and width. Against the sweep's
wall time it tells how much of a sweep is training and how much the queue and store add.

Run by hand:  .venv/bin/python bench/sweep_training.py [--activation tanh|relu] [--epochs 50]
"""
import argparse
import os
import sys
import time

# bench/kernels.py would shadow the package: import it from the checkout's root.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(_HERE)] + [p for p in sys.path
                                         if os.path.abspath(p or ".") != _HERE]
from threadpoolctl import threadpool_limits  # noqa: E402

import kernels  # noqa: E402

# bench/sweep.py's grid and validation split.
LEARNING_RATES = [0.01, 0.03, 0.1, 0.3]
BATCH_SIZES = [16, 32, 64, 128]
WIDTHS = [16, 32, 64]
VALIDATION = 0.2


def main() -> None:
    """Print the grid's training time, in all and per batch size and width."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--activation", default="tanh")
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    X, y = kernels.load_dataset("digits")
    n_val = int(round(VALIDATION * len(X)))
    train, validation = (X[:-n_val], y[:-n_val]), (X[-n_val:], y[-n_val:])
    base = dict(activation=args.activation, output_activation="softmax",
                loss="cross_entropy", batch_mode="minibatch", shuffle=True, seed=0,
                validation=validation)
    total, per_shape = 0.0, {}
    with threadpool_limits(1):
        kernels.train(*train, layers=[64, 16, 10], learning_rate=0.1, epochs=1,
                      batch_size=16, **base)  # loads the kernels
        for lr in LEARNING_RATES:
            for batch in BATCH_SIZES:
                for width in WIDTHS:
                    started = time.perf_counter()
                    kernels.train(*train, layers=[64, width, 10], learning_rate=lr,
                                  epochs=args.epochs, eval_every=args.epochs,
                                  batch_size=batch, **base)
                    seconds = time.perf_counter() - started
                    total += seconds
                    per_shape[batch, width] = per_shape.get((batch, width), 0.0) + seconds
    runs = len(LEARNING_RATES) * len(BATCH_SIZES) * len(WIDTHS)
    print(f"{runs} runs of {args.epochs} epochs ({args.activation}): {total:.3f} s in all, "
          f"{total / 2:.3f} s on two workers")
    for (batch, width), seconds in sorted(per_shape.items()):
        print(f"  batch {batch:3d}, width {width:2d}: "
              f"{seconds / len(LEARNING_RATES) * 1e3:6.1f} ms a run")


if __name__ == "__main__":
    main()
