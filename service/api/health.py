"""/api/v1/health: reachability of the database, the broker and the workers."""

from flask.views import MethodView
from marshmallow import Schema, fields
from sqlalchemy import text

from service.web.context import db, queue

from .parser import Blueprint

blp = Blueprint("health", __name__, url_prefix="/api/v1/health", description="Health")


class HealthSchema(Schema):
    status = fields.String(metadata={"enum": ["ok", "degraded"]})
    api = fields.Boolean()
    database = fields.Boolean()
    broker = fields.Boolean()
    workers = fields.List(fields.String(), allow_none=True,
                          metadata={"description": "workers answering a ping; null where the "
                                                   "broker cannot broadcast (embedded)"})


@blp.route("")
class Health(MethodView):
    @blp.doc(security=[])  # open without a token (service.api.auth.PUBLIC)
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="a dependency is unreachable")
    def get(self):
        """API, database, broker and worker reachability."""
        try:
            db().execute(text("SELECT 1"))
            database = True
        except Exception:
            database = False
        broker = queue().broker_reachable()
        workers = queue().worker_names() if broker else []
        healthy = database and broker and (workers is None or bool(workers))
        body = {"status": "ok" if healthy else "degraded", "api": True, "database": database,
                "broker": broker, "workers": workers}
        return body, (200 if database and broker else 503)
