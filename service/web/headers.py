"""Security headers on every response of the app (API, dashboard, Swagger page, static files).

HTML pages get a Content-Security-Policy that runs scripts and styles from this origin only
(the dashboard's, Chart.js and Swagger UI are all served from ``/ui/static``; no page has an
inline script), so an injected ``<script>`` or a page framed by another site does nothing.
Every other response (JSON, CSV, NPZ, PNG, SVG) gets a policy that loads nothing and only
keeps inline styles, which matplotlib's SVG drawings use when opened on their own.
"""

from flask import Flask, Response

PAGE_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    # Swagger UI's stylesheet draws its icons with data: URLs.
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
DOCUMENT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox"

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def add_security_headers(response: Response) -> Response:
    """Set the security headers on ``response`` (a view's own choice of one is kept)."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    policy = PAGE_POLICY if response.mimetype == "text/html" else DOCUMENT_POLICY
    response.headers.setdefault("Content-Security-Policy", policy)
    return response


def install(app: Flask) -> None:
    """Add the security headers to every response of ``app``, errors included."""
    app.after_request(add_security_headers)
