"""/api/v1/health: reachability of the database, the broker and the workers.

Cheap enough for load balancers to poll: the database answers a ``SELECT 1`` and the broker's
state comes from a probe cached per app (``service.queue.status.BrokerStatus``), so no call
waits for a broadcast ping. Anyone may ask; the workers' names go only to callers with a
live token (the count to everyone)."""

from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields
from sqlalchemy import text

from service.compiling import kernels_status
from service.queue.status import BrokerStatus
from service.web.context import current_user, db

from .parser import Blueprint

blp = Blueprint("health", __name__, url_prefix="/api/v1/health", description="Health")


class KernelsSchema(Schema):
    compiling = fields.Boolean(metadata={"description": "always true (the object is null "
                                                        "otherwise)"})
    elapsed_seconds = fields.Float(metadata={"description": "since the compile started"})
    expected_seconds = fields.Float(allow_none=True,
                                    metadata={"description": "how long the last compile on "
                                                             "this machine took"})


class HealthSchema(Schema):
    status = fields.String(metadata={"enum": ["ok", "degraded"]})
    api = fields.Boolean()
    database = fields.Boolean()
    broker = fields.Boolean()
    worker_count = fields.Integer(allow_none=True,
                                  metadata={"description": "workers answering a ping (as of "
                                                           "at most a few seconds ago); null "
                                                           "where the broker cannot broadcast "
                                                           "(embedded)"})
    workers = fields.List(fields.String(), allow_none=True,
                          metadata={"description": "their names, only for a caller sending a "
                                                   "live token; null where the broker cannot "
                                                   "broadcast (embedded)"})
    kernels = fields.Nested(KernelsSchema, allow_none=True,
                            metadata={"description": "while a worker on the API's host "
                                                     "compiles the training kernels (its "
                                                     "first start on this machine; queued "
                                                     "runs wait for it), else null"})


def broker_status() -> BrokerStatus:
    """This app's cached broker probe (made on first use)."""
    state = current_app.extensions["descent"]
    if "broker_status" not in state:
        state.setdefault("broker_status", BrokerStatus(state["queue"]))
    return state["broker_status"]


@blp.route("")
class Health(MethodView):
    @blp.doc(security=[])  # open without a token (service.api.auth.PUBLIC and OPTIONAL)
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="a dependency is unreachable")
    def get(self):
        """API, database, broker and worker reachability (worker names with a token)."""
        try:
            db().execute(text("SELECT 1"))
            database = True
        except Exception:
            database = False
        probe = broker_status().current()
        broker = probe.reachable
        workers = probe.workers if broker else []
        healthy = database and broker and (workers is None or bool(workers))
        body = {"status": "ok" if healthy else "degraded", "api": True, "database": database,
                "broker": broker, "worker_count": None if workers is None else len(workers),
                "kernels": kernels_status()}
        if current_user() is not None:
            body["workers"] = workers
        return body, (200 if database and broker else 503)
