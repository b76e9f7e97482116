"""How long NumPy's BLAS threads keep a core busy after a multi-threaded product: after a
2-thread (1024x1024)@(1024x1024), a pause of S seconds, then the process's CPU ticks (1/100 s,
all threads, from /proc/self/task) over the next 0.5 s of sleep. OpenBLAS's idle threads
spin for about 2**28 TSC cycles before they sleep; bench/kernels.py's SETTLE_SECONDS must
outlast that, or a timed run after a peer's product shares its cores with the spin.

Run by hand:  .venv/bin/python bench/blas_spin.py   (Linux only: it reads /proc)
"""
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

PAUSES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


def process_ticks() -> int:
    """User + system CPU ticks of every thread of this process."""
    total = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def main() -> None:
    """Print the ticks spent while sleeping, after each pause."""
    a = np.random.default_rng(0).standard_normal((1024, 1024))
    for pause in PAUSES:
        ticks = []
        for _ in range(3):
            with threadpool_limits(2, user_api="blas"):
                a @ a
            time.sleep(pause)
            start = process_ticks()
            time.sleep(0.5)
            ticks.append(process_ticks() - start)
        print(f"pause {pause:.2f} s: CPU ticks (1/100 s) in the next 0.5 s of sleep: {ticks}")


if __name__ == "__main__":
    main()
