"""Hostile dataset uploads are refused before they are unpacked: an NPZ of a few hundred KB
that holds gigabytes of zeros, archives whose zip directory lies about a member's size or is
huge, members packed by another method, CSV files of millions of rows or of one endless
row, JSON bodies over the row limit. Each is answered 422 naming the field, and the memory
traced while the request runs (tracemalloc, numpy's buffers included) stays within a small
multiple of the upload's size.

The checks run before anything is stored, so SQLite alone is enough here
(tests/service/test_api_datasets.py covers stored uploads on both backends)."""

import gc
import io
import json
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest

from service.settings import Limits

from .conftest import API, error_of

# A refused upload may cost this many times its own size in traced memory.
MEMORY_FACTOR = 4


@pytest.fixture
def database_backend() -> str:
    return "sqlite"


def traced(call):
    """(result, peak traced bytes, seconds) of ``call()``."""
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak, time.perf_counter() - start


def report(what: str, size: int, peak: int, seconds: float) -> None:
    """One line for docs/reliability.md (shown with pytest -s)."""
    print(f"\n[upload-limits] {what}: upload {size / 1e6:.2f} MB, peak traced "
          f"{peak / 1e6:.1f} MB ({peak / size:.1f}x), {seconds:.2f} s")


def upload(client, content: bytes, filename: str, name: str = "hostile"):
    """POST ``content`` as the multipart ``file`` of a dataset upload, traced."""
    def post():
        return client.post(f"{API}/datasets", content_type="multipart/form-data",
                           data={"name": name, "file": (io.BytesIO(content), filename)})
    return traced(post)


# ------------------------------------------------------------------ archives built by hand


def npy_header(shape, descr: str = "<f8") -> bytes:
    """A version 1.0 .npy header of an array of ``shape``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def deflated_zeros(header: bytes, zero_bytes: int) -> tuple[bytes, int, int]:
    """(raw deflate stream, CRC-32, size) of ``header`` then ``zero_bytes`` zero bytes; fast,
    by repeating one fully flushed deflate block of a MiB of zeros (what a compressor would
    produce, about a thousand times smaller than the data)."""
    chunk = 1 << 20
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = first.compress(header) + first.flush(zlib.Z_FULL_FLUSH)
    block_maker = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = block_maker.compress(bytes(chunk)) + block_maker.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(zero_bytes, chunk)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = last.compress(bytes(rest)) + last.flush()
    crc = zlib.crc32(header)
    zeros = bytes(chunk)
    for _ in range(whole):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rest), crc)
    return head + block * whole + tail, crc, len(header) + zero_bytes


def zip_archive(members) -> bytes:
    """A zip file of ``members``: (name, packed bytes, CRC-32, size declared in the zip
    directory, compression method) each, written as they are (so sizes may lie)."""
    body, directory, offset = [], [], 0
    for name, packed, crc, size, method in members:
        encoded = name.encode()
        local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 33, crc,
                            len(packed), size, len(encoded), 0) + encoded
        body += [local, packed]
        directory.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 33,
                                     crc, len(packed), size, len(encoded), 0, 0, 0, 0, 0,
                                     offset) + encoded)
        offset += len(local) + len(packed)
    directory = b"".join(directory)
    count = min(len(members), 0xFFFF)  # zipfile reads the whole directory whatever it says
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), offset,
                      0)
    return b"".join(body) + directory + end


def stored(name: str, data: bytes, declared: int | None = None):
    """A member kept as it is (method 0), its size declared as ``declared`` if given."""
    return name, data, zlib.crc32(data), len(data) if declared is None else declared, 0


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def zeros_npz() -> bytes:
    """An NPZ of 807 KB (the issue's was 831 KB): X, 2,000,000 x 50 float64 zeros (800 MB
    unpacked), and y, 2,000,000 zero labels."""
    rows = 2_000_000
    members = []
    for name, shape in (("X.npy", (rows, 50)), ("y.npy", (rows,))):
        header = npy_header(shape)
        packed, crc, size = deflated_zeros(header, 8 * int(np.prod(shape)))
        members.append((name, packed, crc, size, 8))
    return zip_archive(members)


# ---------------------------------------------------------------------------------- NPZ


@pytest.mark.parametrize("limits", [Limits(), Limits(max_samples=1000)],
                         ids=["default-limits", "max_samples=1000"])
def test_npz_of_two_million_zero_rows_is_refused_from_its_headers(make_client, zeros_npz,
                                                                   limits):
    client = make_client(limits=limits)
    response, peak, seconds = upload(client, zeros_npz, "zeros.npz")
    report(f"NPZ 2,000,000 x 50 zeros, max_samples={limits.max_samples}", len(zeros_npz),
           peak, seconds)
    error = error_of(response, 422)
    assert set(error["fields"]) == {"X"}
    assert "2000000 rows" in error["fields"]["X"]
    assert peak <= MEMORY_FACTOR * len(zeros_npz)


def test_npz_over_the_column_limit_or_unpacked_size_is_refused(make_client):
    client = make_client(limits=Limits(max_features=8, max_upload_bytes=100_000))
    wide = zip_archive([stored("X.npy", npy(np.zeros((2, 9)))),
                        stored("y.npy", npy([0, 1]))])
    error = error_of(upload(client, wide, "wide.npz")[0], 422)
    assert set(error["fields"]) == {"X"} and "9 columns" in error["fields"]["X"]
    # 20,000 x 8 float64 zeros: 1.28 MB unpacked from an upload of a few KB
    big = zip_archive([(name, *deflated_zeros(npy_header(shape), 8 * int(np.prod(shape))), 8)
                       for name, shape in (("X.npy", (20_000, 8)), ("y.npy", (20_000,)))])
    assert len(big) < 100_000
    error = error_of(upload(client, big, "big.npz")[0], 422)
    assert set(error["fields"]) == {"file"}
    assert "DESCENT_MAX_UPLOAD_BYTES" in error["fields"]["file"]
    # int8 features count as the float64 they become
    small_ints = zip_archive([stored("X.npy", npy(np.zeros((2000, 8), dtype=np.int8))),
                              stored("y.npy", npy(np.zeros(2000, dtype=np.int8)))])
    error = error_of(upload(client, small_ints, "ints.npz")[0], 422)
    assert set(error["fields"]) == {"file"}


def test_npz_whose_zip_directory_lies_about_a_size_is_refused(client):
    X, y = npy(np.ones((4, 2))), npy([0, 1, 1, 0])
    # The header says 4 x 2 but the zip declares a member of 1 GB (a bomb behind a small
    # header): numpy would read the 64 bytes it wants and never notice.
    header = npy_header((4, 2))
    packed, crc, size = deflated_zeros(header, 2**30)
    bomb = zip_archive([("X.npy", packed, crc, size, 8), stored("y.npy", y)])
    error = error_of(upload(client, bomb, "bomb.npz")[0], 422)
    assert set(error["fields"]) == {"file"}
    assert "X.npy" in error["fields"]["file"] and "declares" in error["fields"]["file"]
    # declared smaller than the array its header describes
    short = zip_archive([stored("X.npy", X, declared=len(X) - 8), stored("y.npy", y)])
    error = error_of(upload(client, short, "short.npz")[0], 422)
    assert set(error["fields"]) == {"file"}
    # declared larger, the data itself being what the header says
    long = zip_archive([stored("X.npy", X, declared=len(X) + 8), stored("y.npy", y)])
    error = error_of(upload(client, long, "long.npz")[0], 422)
    assert set(error["fields"]) == {"file"}
    assert client.get(f"{API}/datasets").get_json()["datasets"] == []
    # the honest archive of the same arrays is taken
    honest = zip_archive([stored("X.npy", X), stored("y.npy", y)])
    response = upload(client, honest, "honest.npz", name="honest")[0]
    assert response.status_code == 201, response.get_json()
    assert (response.get_json()["n_samples"], response.get_json()["n_features"]) == (4, 2)


def test_npz_with_a_huge_zip_directory_is_refused_before_reading_it(client):
    """A directory of 100,000 empty members (8.6 MB): zipfile would build an object for
    each."""
    content = zip_archive([stored(f"m{i}", b"") for i in range(100_000)])
    response, peak, seconds = upload(client, content, "many.npz")
    report("NPZ with 100,000 zip members", len(content), peak, seconds)
    error = error_of(response, 422)
    assert set(error["fields"]) == {"file"} and "directory" in error["fields"]["file"]
    assert peak <= MEMORY_FACTOR * len(content)


def test_npz_members_packed_otherwise_or_not_arrays_are_refused(client):
    X, y = npy(np.ones((4, 2))), npy([0, 1, 1, 0])
    # bzip2 and lzma members decompress without an output bound in zipfile
    packed = zlib.compress(X)  # any bytes: the method is refused before they are read
    for method in (12, 14):
        archive = zip_archive([("X.npy", packed, zlib.crc32(X), len(X), method),
                               stored("y.npy", y)])
        error = error_of(upload(client, archive, "packed.npz")[0], 422)
        assert set(error["fields"]) == {"file"} and "X.npy" in error["fields"]["file"]
    # deflated members whose data is not deflate, or stops short
    deflated = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = deflated.compress(X) + deflated.flush()
    for damaged in (b"\xff" * 64, packed[:len(packed) // 2]):
        archive = zip_archive([("X.npy", damaged, zlib.crc32(X), len(X), 8), stored("y.npy", y)])
        error = error_of(upload(client, archive, "damaged.npz")[0], 422)
        assert set(error["fields"]) == {"file"}, error
    not_npy = zip_archive([stored("X.npy", b"just some bytes, no magic"), stored("y.npy", y)])
    error = error_of(upload(client, not_npy, "raw.npz")[0], 422)
    assert set(error["fields"]) == {"file"}
    texts = zip_archive([stored("X.npy", npy(np.array([["a", "b"]] * 4))), stored("y.npy", y)])
    error = error_of(upload(client, texts, "texts.npz")[0], 422)
    assert set(error["fields"]) == {"X"}
    for bad_y, field in ((np.zeros((4, 2, 2)), "y"), (np.zeros(5), "y"),
                         (np.array(["a"] * 4), "y")):
        archive = zip_archive([stored("X.npy", X), stored("y.npy", npy(bad_y))])
        error = error_of(upload(client, archive, "y.npz")[0], 422)
        assert set(error["fields"]) == {field}, (bad_y, error)
    # members named without .npy are what np.load finds too
    plain = zip_archive([stored("X", X), stored("y", y)])
    response = upload(client, plain, "plain.npz", name="plain")[0]
    assert response.status_code == 201, response.get_json()


# ---------------------------------------------------------------------------------- CSV


@pytest.fixture(scope="module")
def two_million_rows() -> bytes:
    """An 8 MB CSV of 2,000,000 rows (one feature, one label)."""
    return b"0,1\n" * 2_000_000


@pytest.mark.parametrize("limits", [pytest.param(Limits(), marks=pytest.mark.slow),
                                    Limits(max_samples=1000)],
                         ids=["default-limits", "max_samples=1000"])
def test_csv_of_two_million_rows_stops_at_the_row_limit(make_client, two_million_rows, limits):
    client = make_client(limits=limits)
    response, peak, seconds = upload(client, two_million_rows, "rows.csv")
    report(f"CSV 2,000,000 rows, max_samples={limits.max_samples}", len(two_million_rows),
           peak, seconds)
    error = error_of(response, 422)
    assert set(error["fields"]) == {"X"}
    assert f"the limit is {limits.max_samples}" in error["fields"]["X"]
    assert peak <= MEMORY_FACTOR * len(two_million_rows)


def test_csv_at_the_row_limit_is_taken(make_client):
    client = make_client(limits=Limits(max_samples=1000))
    content = b"x,label\n" + b"".join(b"%d,%d\n" % (i, i % 2) for i in range(1000))
    response = upload(client, content, "rows.csv", name="thousand")[0]
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["n_samples"] == 1000
    error = error_of(upload(client, content + b"5,1\n", "rows.csv")[0], 422)
    assert set(error["fields"]) == {"X"}


def test_csv_over_the_column_limit_or_of_an_endless_row_is_refused(make_client):
    client = make_client(limits=Limits(max_features=8))
    error = error_of(upload(client, b"0,0,0,0,0,0,0,0,0,1\n" * 3, "wide.csv")[0], 422)
    assert set(error["fields"]) == {"X"} and "9 columns" in error["fields"]["X"]
    error = error_of(upload(client, b"0,1\n" + b"0,0,0,0,0,0,0,0,0,1\n", "late.csv")[0], 422)
    assert set(error["fields"]) == {"file"}  # ragged
    # One row of 5,000,000 values and no line break (10 MB): the csv module would hold
    # every value as a string before anything could count them.
    client = make_client()
    endless = b"0," * 5_000_000
    response, peak, seconds = upload(client, endless, "endless.csv")
    report("CSV one row of 5,000,000 values", len(endless), peak, seconds)
    error = error_of(response, 422)
    assert set(error["fields"]) == {"file"} and "characters" in error["fields"]["file"]
    assert peak <= MEMORY_FACTOR * len(endless)


# --------------------------------------------------------------------------------- JSON


def test_json_over_the_row_or_column_limit_is_refused_before_each_number_is_checked(
        make_client):
    client = make_client(limits=Limits(max_samples=1000, max_features=8))
    rows = 200_000
    body = json.dumps({"name": "rows", "X": [[0, 0]] * rows, "y": [0] * rows}).encode()

    def post():
        return client.post(f"{API}/datasets", data=body, content_type="application/json")
    response, peak, seconds = traced(post)
    report(f"JSON {rows:,} rows, max_samples=1000", len(body), peak, seconds)
    error = error_of(response, 422)
    assert set(error["fields"]) == {"X"} and "the limit is 1000" in error["fields"]["X"]
    # The parsed JSON itself costs about 8x its text (a list object per row); checking every
    # number (marshmallow) and building the arrays would cost as much again.
    assert peak <= 16 * len(body)
    wide = {"name": "wide", "X": [[0] * 9] * 3, "y": [0, 1, 0]}
    error = error_of(client.post(f"{API}/datasets", json=wide), 422)
    assert set(error["fields"]) == {"X"} and "9 columns" in error["fields"]["X"]
