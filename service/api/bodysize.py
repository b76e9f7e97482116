"""Request body size limits: 413 with the JSON error body, before anything reads the body.

Dataset uploads (POST /datasets, JSON or multipart, and any multipart body) may be up to
DESCENT_MAX_UPLOAD_BYTES; every other body up to DESCENT_MAX_JSON_BYTES.
"""

from flask import Flask, request

from .context import settings
from .errors import ApiError
from .parser import FORM_TYPES

# The endpoint taking dataset uploads (blueprint "datasets", view class Datasets).
UPLOAD_ENDPOINTS = {("POST", "datasets.Datasets")}


def server_body_ceiling(limits) -> int:
    """The WSGI server's own body limit (waitress's max_request_body_size) for these limits.

    waitress answers a body over its ceiling itself, in plain text, and resets the
    connection under a big one: keep it above the API's limits, so that the API answers
    every body over a limit with its JSON 413 (waitress reads the whole body first)."""
    return max(2**30, limits.max_upload_bytes + 2**20, limits.max_json_bytes + 2**20)


def body_limit() -> tuple[int, str]:
    """(bytes, setting name) of the largest body this request may carry."""
    limits = settings().limits
    if request.mimetype in FORM_TYPES or (request.method, request.endpoint) in UPLOAD_ENDPOINTS:
        return limits.max_upload_bytes, "DESCENT_MAX_UPLOAD_BYTES"
    return limits.max_json_bytes, "DESCENT_MAX_JSON_BYTES"


def install(app: Flask) -> None:
    """Check each request's declared length, and cap what is read of a chunked one."""

    @app.before_request
    def _limit_body():
        limit, name = body_limit()
        length = request.content_length
        if length is None and request.environ.get("wsgi.input_terminated"):
            # No Content-Length (a chunked body): read one byte past the limit to know.
            # (Werkzeug would silently cut the body at max_content_length.)
            request.max_content_length = limit + 1
            length = len(request.get_data(cache=True))
        request.max_content_length = limit
        if length is not None and length > limit:
            raise ApiError(413, "request_entity_too_large",
                           f"the request body is over {limit} bytes ({name})",
                           {"body": f"at most {limit} bytes"})
