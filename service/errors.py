"""What the use cases refuse with: a machine-readable code, a message for people and, where
fields are to blame, a message per field (dotted paths for nested ones). These know nothing of
HTTP; ``service.api.errors`` maps them to statuses and the dashboard to its pages."""


class DomainError(Exception):
    """A use case refused; ``code`` says why (API.md section 3)."""

    code = "error"

    def __init__(self, message: str, fields: dict | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.fields = message, dict(fields or {})
        if code is not None:
            self.code = code


class Invalid(DomainError):
    """Bad input: ``fields`` says what is wrong with each bad field."""

    code = "validation_error"

    def __init__(self, problems: dict, message: str | None = None):
        super().__init__(message or f"invalid {', '.join(sorted(problems))}", problems)


class NotFound(DomainError):
    """No such resource, or one its caller may not see."""

    code = "not_found"


class Conflict(DomainError):
    """The resource's state forbids the request (a finished run, a name taken)."""

    code = "conflict"


class NotReady(Conflict):
    """What was asked for does not exist yet (a queued run's parameters)."""

    code = "not_ready"


class QuotaExceeded(DomainError):
    """The user's quota would be exceeded; ``fields`` names the quota (its setting,
    DESCENT_MAX_...) with what is used, asked for and allowed."""

    code = "quota_exceeded"

    def __init__(self, problems: dict):
        super().__init__(f"over the quota {', '.join(sorted(problems))}", problems)


class QueueDown(DomainError):
    """The broker could not take the work; nothing was kept."""

    code = "queue_unavailable"

    def __init__(self):
        super().__init__("the broker is unreachable; nothing was queued")


def field_messages(messages) -> dict:
    """marshmallow's messages ({field: [...]}, nested dicts for nested fields) as {field:
    "message"}, with nested fields as dotted paths and list items as [i]: ``layers[1]``,
    ``X[2][0]``; a message about the whole object under ``_schema``."""
    if not isinstance(messages, dict):
        return {"_schema": _text(messages)} if messages else {}
    flat = {}
    for field, value in messages.items():
        field = f"[{field}]" if isinstance(field, int) else str(field)
        if isinstance(value, dict):
            for sub, message in field_messages(value).items():
                flat[f"{field}{sub}" if sub.startswith("[") else f"{field}.{sub}"] = message
        else:
            flat[field] = _text(value)
    return flat


def _text(value) -> str:
    return "; ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
