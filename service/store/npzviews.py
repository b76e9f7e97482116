"""The arrays of stored NPZ bytes as read-only views into those bytes, not copies: a run's
parameters (stored uncompressed, see ``arrays.params_to_npz``) can be encoded or used
without a second copy of them in memory."""

import io
import struct
import zipfile

import numpy as np

from .arrays import from_npz

# A local file header: signature, then at offset 26 the lengths of the name and extra field.
LOCAL_HEADER = struct.Struct("<4s22xHH")
LOCAL_SIGNATURE = b"PK\x03\x04"
# Enough bytes for any .npy header numpy writes for a plain numeric array.
NPY_HEADER_LIMIT = 64 * 1024


def npz_views(data: bytes) -> dict:
    """The named arrays of NPZ bytes (no pickles), each a read-only view into ``data`` when
    stored uncompressed, else decoded (a copy)."""
    buffer = memoryview(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        arrays = {info.filename.removesuffix(".npy"): _stored_array(buffer, info)
                  for info in archive.infolist()}
    if any(array is None for array in arrays.values()):
        decoded = from_npz(data)
        arrays = {name: decoded[name] if array is None else array
                  for name, array in arrays.items()}
    return arrays


def params_views(data: bytes) -> dict:
    """``arrays.params_from_npz`` without copies: {"weights": [W1, ...], "biases": [...]}."""
    arrays = npz_views(data)
    n_layers = len(arrays) // 2
    return {"weights": [arrays[f"W{l}"] for l in range(1, n_layers + 1)],
            "biases": [arrays[f"B{l}"] for l in range(1, n_layers + 1)]}


def _stored_array(buffer: memoryview, info: zipfile.ZipInfo):
    """The array of one stored (uncompressed) member as a view into ``buffer``; None when
    the member is compressed or not a plain .npy array."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    signature, name_length, extra_length = LOCAL_HEADER.unpack_from(buffer, info.header_offset)
    if signature != LOCAL_SIGNATURE:
        return None
    start = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
    member = buffer[start:start + info.file_size]
    header = io.BytesIO(member[:NPY_HEADER_LIMIT])  # copies the small prefix only
    try:
        version = np.lib.format.read_magic(header)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(header)
    except ValueError:
        return None
    if dtype.hasobject:
        raise ValueError(f"{info.filename}: object arrays are not allowed")
    count = int(np.prod(shape, dtype=np.int64))
    if header.tell() + count * dtype.itemsize > len(member):
        raise ValueError(f"{info.filename}: truncated")
    flat = np.frombuffer(member, dtype=dtype, count=count, offset=header.tell())
    return flat.reshape(shape, order="F" if fortran_order else "C")
