"""Every error as JSON: {"error": {"code", "message", "fields"}} (API.md section 3)."""

from flask import jsonify
from werkzeug.exceptions import HTTPException


class ApiError(Exception):
    """An error the API answers with a given status, code and optional per-field messages."""

    def __init__(self, status: int, code: str, message: str, fields=None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields or {}


def error_response(status: int, code: str, message: str, fields=None):
    """The JSON error response."""
    body = {"error": {"code": code, "message": message, "fields": fields or {}}}
    return jsonify(body), status


def flatten_messages(messages) -> dict:
    """webargs/marshmallow messages ({location: {field: [...]}}) as {field: "message"}."""
    if isinstance(messages, dict) and set(messages) <= {"json", "query", "form", "files",
                                                         "headers", "view_args"}:
        merged = {}
        for location_messages in messages.values():
            merged.update(flatten_messages(location_messages))
        return merged
    flat = {}
    for field, value in (messages or {}).items():
        if isinstance(value, dict):
            for sub, message in flatten_messages(value).items():
                flat[f"{field}.{sub}" if not str(sub).startswith("[") else f"{field}{sub}"] = message
        elif isinstance(value, list):
            flat[field] = "; ".join(str(v) for v in value)
        else:
            flat[field] = str(value)
    return flat


def register_error_handlers(app) -> None:
    """JSON bodies for ApiError and for every HTTP error Flask or webargs raises."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        return error_response(error.status, error.code, error.message, error.fields)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        data = getattr(error, "data", None) or {}
        fields = flatten_messages(data.get("messages")) if "messages" in data else {}
        if error.code == 422:
            names = ", ".join(sorted(fields)) or "the request"
            return error_response(422, "validation_error", f"invalid {names}", fields)
        code = (error.name or "error").lower().replace(" ", "_")
        return error_response(error.code or 500, code, error.description or error.name, fields)
