"""Every error as JSON: {"error": {"code", "message", "fields"}} (API.md section 3), in one
place: the domain's errors (``service.errors``) mapped to statuses, the API's own (``ApiError``:
authentication, bodies, idempotency keys) and those Flask or webargs raise."""

from apispec import BasePlugin
from flask import jsonify
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

from service.errors import (
    Conflict,
    DomainError,
    Invalid,
    NotFound,
    QueueDown,
    QuotaExceeded,
    field_messages,
)


class ErrorDetailSchema(Schema):
    code = fields.String(metadata={"description": "machine-readable, such as validation_error, "
                                                  "not_found, not_ready, quota_exceeded, "
                                                  "queue_unavailable"})
    message = fields.String(metadata={"description": "for people"})
    # (named through data_key: a field called "fields" would shadow Schema.fields)
    bad_fields = fields.Dict(keys=fields.String(), values=fields.String(), data_key="fields",
                             metadata={"description": "what is wrong with each bad field "
                                                      "(dotted paths for nested ones)"})


class ErrorSchema(Schema):
    """Every error the API answers (the OpenAPI document's error responses)."""

    error = fields.Nested(ErrorDetailSchema)


class ApiError(Exception):
    """An error of HTTP itself (no token, a body too large or not JSON, an idempotency key in
    use) that the API answers with a given status, code and optional per-field messages."""

    def __init__(self, status: int, code: str, message: str, fields=None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields or {}


def error_response(status: int, code: str, message: str, fields=None):
    """The JSON error response."""
    body = {"error": {"code": code, "message": message, "fields": fields or {}}}
    return jsonify(body), status


# Top-level keys of webargs' messages that name where the data came from, not a field.
LOCATIONS = {"json", "query", "querystring", "form", "files", "headers", "view_args",
             "json_or_form", "cookies"}

# The status of each kind of domain error (the first class of an error's MRO listed wins).
STATUS = {Invalid: 422, NotFound: 404, Conflict: 409, QuotaExceeded: 429, QueueDown: 503}


def status_of(error: DomainError) -> int:
    """The HTTP status that answers a domain error."""
    return next((STATUS[kind] for kind in type(error).__mro__ if kind in STATUS), 500)


def flatten_messages(messages) -> dict:
    """webargs/marshmallow messages ({location: {field: [...]}}) as {field: "message"}, with
    nested fields as dotted paths and list items as [i] (``service.errors.field_messages``).

    A message about a whole location (webargs' ``{"json": ["Invalid JSON body."]}``) is kept
    under the location's name; one about the whole object under ``_schema``."""
    if not (isinstance(messages, dict) and messages and set(messages) <= LOCATIONS):
        return field_messages(messages)
    merged = {}
    for location, location_messages in messages.items():
        if isinstance(location_messages, dict):
            merged.update(field_messages(location_messages))
        else:
            merged.update(field_messages({location: location_messages}))
    return merged


def register_error_handlers(app) -> None:
    """JSON bodies for domain errors, ApiError and every HTTP error Flask or webargs raises."""

    @app.errorhandler(DomainError)
    def _domain_error(error: DomainError):
        return error_response(status_of(error), error.code, error.message, error.fields)

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        return error_response(error.status, error.code, error.message, error.fields)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        data = getattr(error, "data", None) or {}
        fields = flatten_messages(data.get("messages")) if "messages" in data else {}
        if "_schema" in fields:  # marshmallow's name for the body as a whole
            fields["body"] = fields.pop("_schema")
        if error.code == 422:
            names = ", ".join(sorted(fields)) or "the request"
            return error_response(422, "validation_error", f"invalid {names}", fields)
        code = (error.name or "error").lower().replace(" ", "_")
        return error_response(error.code or 500, code, error.description or error.name, fields)


# Operations with a request body may also answer these (a body that is not JSON, not valid
# JSON, or over the configured size).
BODY_ERRORS = {"400": "BAD_REQUEST", "413": "REQUEST_ENTITY_TOO_LARGE",
               "415": "UNSUPPORTED_MEDIA_TYPE"}


class CommonResponses(BasePlugin):
    """An apispec plugin documenting the errors of every operation that no view declares
    itself: 401 where a token is needed, 429 (rate limit) outside ``unlimited_paths``, and
    the body errors on operations that take a body. (There is no catch-all "default"
    response: every status an operation can answer is listed, so clients and schemathesis
    can rely on the list.)"""

    def __init__(self, unlimited_paths=()):
        self.unlimited_paths = tuple(unlimited_paths)

    def init_spec(self, spec):
        """Register the 429 response, with its Retry-After header."""
        super().init_spec(spec)
        spec.components.response("TOO_MANY_REQUESTS_RETRY", {
            "description": "Too many requests with this token (or from this address, without "
                           "one); try again after Retry-After seconds",
            "headers": {"Retry-After": {"description": "seconds until the limit resets",
                                        "schema": {"type": "integer"}}},
            "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}},
        }, lazy=True)
        # The 429 of operations that add work or data (declared by their views).
        spec.components.response("TOO_MANY_REQUESTS_OR_QUOTA", {
            "description": "Over a per-user quota (code quota_exceeded; the quota, "
                           "DESCENT_MAX_ACTIVE_RUNS or DESCENT_MAX_USER_BYTES, is the key in "
                           "fields; nothing was stored), or over the rate limit (try again "
                           "after Retry-After seconds)",
            "headers": {"Retry-After": {"description": "with the rate limit only: seconds "
                                                       "until it resets",
                                        "schema": {"type": "integer"}}},
            "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}},
        }, lazy=True)

    def operation_helper(self, path=None, operations=None, **kwargs):
        """Add the common error responses to each operation of ``path``."""
        for method, operation in (operations or {}).items():
            if not isinstance(operation, dict) or method == "parameters":
                continue
            responses = operation.setdefault("responses", {})
            # (views key their responses by int status; these are keyed by str, as in JSON)
            for status in [key for key in responses if isinstance(key, int)]:
                responses[str(status)] = responses.pop(status)
            # Operations open without a token say so with "security: []"; the others
            # answer 401 without a live one.
            if operation.get("security") != []:
                responses.setdefault("401", "UNAUTHORIZED")
            if "requestBody" in operation:
                for status, name in BODY_ERRORS.items():
                    responses.setdefault(status, name)
            if not (path or "").startswith(self.unlimited_paths):
                responses.setdefault("429", "TOO_MANY_REQUESTS_RETRY")
