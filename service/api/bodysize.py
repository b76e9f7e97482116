"""Request body size limits: 413 with the JSON error body, before anything reads the body.

Dataset uploads (POST /datasets, JSON or multipart, and any multipart body) may be up to
DESCENT_MAX_UPLOAD_BYTES; every other body up to DESCENT_MAX_JSON_BYTES. (The WSGI server's
own limit stays above both: ``service.cli.serve.server_body_ceiling``.)
"""

from flask import Flask, request

from service.web.context import settings

from .errors import ApiError
from .parser import FORM_TYPES

# The endpoint taking dataset uploads (blueprint "datasets", view class Datasets).
UPLOAD_ENDPOINTS = {("POST", "datasets.Datasets")}


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
