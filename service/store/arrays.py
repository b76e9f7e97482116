"""NumPy arrays to and from NPZ bytes, and parameters in the API's layout."""

import hashlib
import io

import numpy as np


def to_npz(compress: bool = True, **arrays) -> bytes:
    """Named arrays as NPZ bytes, deflated unless ``compress`` is False."""
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def from_npz(data: bytes) -> dict:
    """The named arrays of NPZ bytes (no pickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def params_to_npz(params: dict) -> bytes:
    """{"weights": [W1, ...], "biases": [B1, ...]} as NPZ with entries W1, B1, W2, B2, ...

    Stored as they are: trained weights barely deflate (a few per cent), and deflating
    them cost a worker more than the rest of a short run's bookkeeping."""
    arrays = {}
    for l, (W, B) in enumerate(zip(params["weights"], params["biases"]), start=1):
        arrays[f"W{l}"] = np.asarray(W)
        arrays[f"B{l}"] = np.asarray(B)
    return to_npz(compress=False, **arrays)


def params_from_npz(data: bytes) -> dict:
    """The inverse of ``params_to_npz``."""
    arrays = from_npz(data)
    n_layers = len(arrays) // 2
    return {
        "weights": [arrays[f"W{l}"] for l in range(1, n_layers + 1)],
        "biases": [arrays[f"B{l}"] for l in range(1, n_layers + 1)],
    }


def content_hash(X: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 over shapes, dtypes and bytes of X and y."""
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(X), np.ascontiguousarray(y)):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
