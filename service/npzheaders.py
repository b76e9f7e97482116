"""The arrays of an NPZ upload, known before they are unpacked: the zip directory is read
within a small budget, each member's .npy header (shape, dtype) is read from the first
bytes of its stream, and a member whose zip-declared size disagrees with its header is
refused. Only then is an array read, and never more than its header promised.

Every refusal is ``Invalid`` naming the upload's ``file`` field."""

import io
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from service.errors import Invalid

# Bytes zipfile may read while opening an archive: its end record (which may sit behind a
# comment of up to 64 KiB) and its directory, which it turns into one object per member.
# An NPZ of X and y needs a few hundred.
MAX_DIRECTORY_BYTES = 192 * 1024
# What reading a damaged member raises (zlib.error: deflated data that is not deflate).
READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)
# The methods whose decompression zipfile bounds by the bytes asked for (bzip2 and lzma
# members may expand a read of 4 KiB without limit).
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}


@dataclass(frozen=True)
class ArrayHeader:
    """What a member's .npy header says of its array."""

    member: str
    shape: tuple
    dtype: np.dtype

    @property
    def count(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=object))


def _bad(message: str) -> Invalid:
    return Invalid({"file": message})


class _ReadBudget(io.RawIOBase):
    """A seekable binary stream that refuses, before reading, a read that would take its
    reads past ``budget`` bytes (None: no budget)."""

    def __init__(self, raw, budget: int | None):
        super().__init__()
        self.raw, self.budget = raw, budget
        self.size = raw.seek(0, io.SEEK_END)
        raw.seek(0)

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        return self.raw.seek(offset, whence)

    def tell(self):
        return self.raw.tell()

    def read(self, size=-1):
        if size is None or size < 0:
            size = max(0, self.size - self.raw.tell())
        if self.budget is not None:
            if size > self.budget:
                raise _bad(f"the zip directory is over {MAX_DIRECTORY_BYTES} bytes (an "
                           f"NPZ upload holds arrays X and y)")
            self.budget -= size
        return self.raw.read(size)

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def open_npz(stream) -> zipfile.ZipFile:
    """The zip archive of the seekable binary ``stream``, its directory read within
    MAX_DIRECTORY_BYTES. Close it when done (``stream`` stays open)."""
    budgeted = _ReadBudget(stream, MAX_DIRECTORY_BYTES)
    try:
        archive = zipfile.ZipFile(budgeted)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise _bad(f"not a readable NPZ file: {exc}") from None
    budgeted.budget = None  # members are read by the bounded reads below
    return archive


def _member(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """The member that np.load reads for ``name`` ("X.npy", else "X")."""
    for candidate in (f"{name}.npy", name):
        try:
            return archive.getinfo(candidate)
        except KeyError:
            continue
    raise _bad(f"an NPZ upload needs arrays named X and y (no {name!r})")


def _open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo):
    if info.compress_type not in METHODS:
        raise _bad(f"{info.filename} is packed by zip method {info.compress_type}; use "
                   f"{' or '.join(METHODS.values())} (numpy.savez or savez_compressed)")
    if info.flag_bits & 0x1:
        raise _bad(f"{info.filename} is encrypted")
    try:
        return archive.open(info)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, ValueError) as exc:
        raise _bad(f"{info.filename}: not a readable zip member: {exc}") from None


def array_header(archive: zipfile.ZipFile, name: str) -> ArrayHeader:
    """The shape and dtype of array ``name``, from its .npy header alone; refuses a member
    that is not a .npy array, holds Python objects, or whose zip-declared size is not its
    header's length plus shape x itemsize."""
    info = _member(archive, name)
    with _open_member(archive, info) as member:
        try:
            version = np.lib.format.read_magic(member)
            reader = HEADER_READERS.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _fortran, dtype = reader(member)
            data_offset = member.tell()
        except READ_ERRORS as exc:
            raise _bad(f"{info.filename} is not a .npy array: {exc}") from None
    header = ArrayHeader(info.filename, tuple(shape), dtype)
    if dtype.hasobject:
        raise _bad(f"{info.filename} holds Python objects ({dtype}); arrays of numbers only")
    expected = data_offset + header.count * dtype.itemsize
    if info.file_size != expected:
        raise _bad(f"{info.filename} declares {info.file_size} bytes in the zip directory "
                   f"but its header describes {expected}")
    return header


def read_array(archive: zipfile.ZipFile, header: ArrayHeader) -> np.ndarray:
    """The array that ``header`` (of ``array_header``) describes."""
    info = archive.getinfo(header.member)
    with _open_member(archive, info) as member:
        try:
            return np.lib.format.read_array(member, allow_pickle=False)
        except READ_ERRORS as exc:
            raise _bad(f"{info.filename}: not a readable .npy array: {exc}") from None
