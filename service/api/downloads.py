"""Big responses written piece by piece: a run's parameters as JSON or NPZ and its history
as JSON or CSV. Each encoder yields the body in chunks of bounded size, byte for byte what
``jsonify`` (compact, sorted keys, one trailing newline) or ``csv.DictWriter`` would have
built whole, so memory stays flat however big the run."""

import csv
import io
import json
from typing import Iterable, Iterator

from flask import Response, stream_with_context

# Floats per JSON chunk of parameters (about 400 kB of text) and bytes per NPZ chunk.
JSON_CHUNK_VALUES = 16 * 1024
BINARY_CHUNK_BYTES = 1024 * 1024
# History rows per chunk (as JSON, each row a dict while it is encoded).
CHUNK_ROWS = 500
# Python's encoder, as Flask's JSON provider calls it for responses.
_ENCODE = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def stream(chunks: Iterable, mimetype: str, filename: str | None = None,
           with_context: bool = False) -> Response:
    """A streamed response of ``chunks``; with ``with_context`` they are written inside the
    request's context (for chunks read from the database through ``db()``)."""
    headers = {"Content-Disposition": f"attachment; filename={filename}"} if filename else {}
    body = stream_with_context(chunks) if with_context else chunks
    return Response(body, mimetype=mimetype, headers=headers)


def binary_chunks(data: bytes, size: int = BINARY_CHUNK_BYTES) -> Iterator[bytes]:
    """``data`` in pieces of ``size`` bytes (WSGI servers take bytes; one piece is copied
    at a time)."""
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield bytes(view[start:start + size])


def params_json(run_id: int, which: str, dtype: str, params: dict) -> Iterator[str]:
    """The JSON of GET /runs/ID/params ({"biases", "dtype", "run_id", "weights", "which"},
    keys sorted) for {"weights": [W1, ...], "biases": [B1, ...]}, a few rows at a time."""
    yield '{"biases":'
    yield from _arrays_json(params["biases"])
    yield f',"dtype":{_ENCODE(dtype)},"run_id":{_ENCODE(run_id)},"weights":'
    yield from _arrays_json(params["weights"])
    yield f',"which":{_ENCODE(which)}}}\n'


def _arrays_json(arrays) -> Iterator[str]:
    """A JSON list of NumPy arrays (nested lists of floats), encoded in row chunks."""
    yield "["
    for i, array in enumerate(arrays):
        if i:
            yield ","
        yield from _array_json(array)
    yield "]"


def _array_json(array) -> Iterator[str]:
    """One array (1-D or 2-D) as JSON, ``JSON_CHUNK_VALUES`` floats at a time."""
    if array.ndim < 2 or array.shape[0] == 0:
        yield _ENCODE(array.tolist())
        return
    rows = max(1, JSON_CHUNK_VALUES // max(1, array.shape[1]))
    yield "["
    for start in range(0, array.shape[0], rows):
        text = _ENCODE(array[start:start + rows].tolist())
        yield ("," if start else "") + text[1:-1]  # the rows, without the list's brackets
    yield "]"


def history_json(run_id: int, pages: Iterable[list], columns: list[str]) -> Iterator[str]:
    """The JSON of GET /runs/ID/history ({"history", "run_id"}, every object's keys sorted)
    for pages of rows (tuples in ``columns`` order), one page at a time."""
    yield '{"history":['
    first = True
    for page in pages:
        for start in range(0, len(page), CHUNK_ROWS):
            rows = page[start:start + CHUNK_ROWS]
            text = _ENCODE([dict(zip(columns, row)) for row in rows])
            yield ("" if first else ",") + text[1:-1]
            first = False
    yield f'],"run_id":{_ENCODE(run_id)}}}\n'


def history_csv(pages: Iterable[list], columns: list[str]) -> Iterator[str]:
    """The CSV of GET /runs/ID/history?format=csv (a header, then one line per epoch) for
    pages of rows (tuples in ``columns`` order), one page at a time."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    yield out.getvalue()
    for page in pages:
        for start in range(0, len(page), CHUNK_ROWS):
            out.seek(0)
            out.truncate()
            writer.writerows(page[start:start + CHUNK_ROWS])
            yield out.getvalue()
