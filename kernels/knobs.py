"""The numeric knobs of the kernels, in one place.

Every module reads them at call time through this module (``knobs.BLAS_MIN``), so a test
changes one with a single ``monkeypatch.setattr(kernels.knobs, "BLAS_MIN", ...)``.
They are constants in production: same spec, seed and dtype give the same bits (API.md).
"""

# Products of batch x fan-in x fan-out at or above this go to BLAS (numba's np.dot); smaller
# ones run on the engine's fused loops, where a call into BLAS would cost more than the
# multiply-adds it saves. Both paths match the reference to rounding (test_paths.py forces
# each with 1 and 2**62), but they sum in different orders, so a new value changes the last
# bits of recorded histories: it is a speed choice, measured with bench/kernels.py.
BLAS_MIN = 4096

# Rows per block when a whole set is evaluated (each epoch's error outside full-batch mode,
# the validation rows, predict): bounds the scratch buffers to this many rows whatever the
# dataset size, while keeping blocks large enough for BLAS. It sets the size of those
# products, so through BLAS_MIN it too can change the last bits of the recorded errors.
EVAL_ROWS = 1024

# kernels.train(threads=T) splits each batch into T parts, trained in parallel on T threads
# with one-thread BLAS each, when a part has at least PARALLEL_MIN_ROWS rows and its
# multiply-adds per layer pass (ceil(batch / T) x the network's weights) reach
# PARALLEL_MIN; else one part runs with T BLAS threads, which costs less than two parallel
# launches per step, and parts of a few rows make products too thin for BLAS. Measured with
# bench/kernels.py and bench/parts_vs_blas.py (bench/README.md, 2026-12-05 evening: the
# split is 41 % faster on 64-128-64-10 at batch 256, at par from 32 rows a part on
# 784-256-128-10, 10 % slower at 16); a new value changes which runs are split, so their
# last bits (as BLAS_MIN does).
PARALLEL_MIN = 1 << 20
PARALLEL_MIN_ROWS = 64

# How a split batch's first-layer gradients are summed over its parts (docs/kernels.md,
# "Reproducibility and threads"). Parts of at most this many rows: each part takes a share
# of the first layer's units and sums them over every part's rows (no per-part copy of the
# first layer's gradients, which at small parts would cost as much to sum as to compute).
# Larger parts: each part computes its own rows' gradients, read from its rows of X while
# they are in cache, then summed by shares (the shares would read all of X once per part).
# Measured with bench/parts_vs_blas.py (bench/README.md, 2026-12-05 evening); a new value
# changes the last bits of split runs whose parts cross it.
SHARES_MAX_ROWS = 256

# Wall time one jitted chunk of epochs aims at. Between chunks train() returns to Python to
# call the callback (progress rows, cancellation): 30 ms keeps that overhead small and a stop
# request answered within a few tens of milliseconds. Never changes the numbers
# (test_reproducibility.py); 0 makes every chunk a single epoch.
CHUNK_SECONDS = 0.03

# Slope of leaky_relu below zero, and its derivative there (at 0 included): part of the
# numeric contract (docs/kernels.md; PyTorch's default). tests/reference.py holds its own copy.
LEAKY_RELU_SLOPE = 0.01
