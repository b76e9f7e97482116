"""What the REST API (``service.api``) and the dashboard (``service.dashboard``) share, so
that neither imports the other: per-request access to the app's session, settings and queue
(``context``), the pictures both draw (``plots``), the warm-up of the kernels the API
runs in-process (``warmup``), the security headers of every answer (``headers``) and the
Swagger page's template (``templates/swagger_ui.html``)."""
