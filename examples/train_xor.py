"""Train the tutorial's 2-8-1 sigmoid network on XOR and print its error curve."""

import time

import numpy as np

import kernels

X, y = kernels.load_dataset("xor")
started = time.perf_counter()
result = kernels.train(
    X, y, layers=[2, 8, 1], activation="sigmoid", loss="mse", learning_rate=2.0,
    batch_mode="full", epochs=3000, seed=0,
)
seconds = time.perf_counter() - started
for epoch in (0, 1, 10, 100, 1000, result.epochs_done):
    print(f"epoch {epoch:5d}  error {result.errors[epoch]:.6f}  accuracy {result.accuracy[epoch]:.2f}")
outputs = kernels.predict(result.params, X, activation="sigmoid", output_activation="sigmoid")
print("inputs -> outputs:")
for row, out in zip(X, outputs[:, 0]):
    print(f"  {row.astype(int).tolist()} -> {out:.3f}")
print(f"{result.epochs_done} epochs in {seconds:.2f} s (first run includes numba compilation)")
