"""/api/v1/datasets: upload (CSV, NPZ or JSON), list, inspect, download and delete datasets."""

from flask import Response, request
from flask.views import MethodView
from marshmallow import Schema, ValidationError, fields, pre_load, validate

from service import datasets
from service.errors import Invalid
from service.runspec import StrictFloat
from service.store import Dataset
from service.store import datasets as store_datasets
from service.store.arrays import to_npz
from service.web.context import db, settings

from .auth import require_user
from .parser import FORM_TYPES, Blueprint
from .schemas import UtcDateTime

blp = Blueprint("datasets", __name__, url_prefix="/api/v1/datasets", description="Datasets")

# (?!\n) keeps Python's $ from accepting a trailing newline; the pattern is also valid in
# the OpenAPI document's (ECMA) dialect.
NAME_RULE = validate.Regexp(r"^[A-Za-z][A-Za-z0-9_.-]{0,199}(?!\n)$",
                            error="letters, digits, '_', '.', '-'; starting with a letter")


class DatasetSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    n_samples = fields.Integer()
    n_features = fields.Integer()
    target_kind = fields.String(metadata={"enum": ["labels", "values", "matrix"]})
    n_targets = fields.Integer()
    n_classes = fields.Integer(allow_none=True)
    content_hash = fields.String()
    builtin = fields.Boolean()
    created_at = UtcDateTime()


class DatasetListSchema(Schema):
    datasets = fields.List(fields.Nested(DatasetSchema))
    builtin_available = fields.List(fields.String())


class DatasetUploadSchema(Schema):
    """JSON upload; CSV (last column is y) and NPZ (arrays X and y) go as multipart
    ``file`` with a ``name`` form field."""

    name = fields.String(required=True, validate=NAME_RULE)
    X = fields.List(fields.List(StrictFloat()), required=True,
                    validate=validate.Length(min=1))
    y = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1))

    def __init__(self, *args, limits=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits

    @pre_load
    def _within_limits(self, data, **kwargs):
        """Refuse more rows or columns of X than ``limits`` allow before each number is
        checked: millions of them cost far more as Python objects than as JSON text."""
        X = data.get("X") if isinstance(data, dict) else None
        if self.limits is None or not isinstance(X, list):
            return data
        if len(X) > self.limits.max_samples:
            raise ValidationError(f"{len(X)} rows; the limit is {self.limits.max_samples}",
                                  field_name="X")
        widest = max((len(row) for row in X if isinstance(row, list)), default=0)
        if widest > self.limits.max_features:
            raise ValidationError(f"{widest} columns; the limit is {self.limits.max_features}",
                                  field_name="X")
        return data


# The multipart form of an upload, for the OpenAPI document.
MULTIPART_UPLOAD = {
    "type": "object",
    "required": ["name", "file"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_RULE.regex.pattern},
        "file": {"type": "string", "format": "binary",
                 "description": "CSV (last column is y; a header row is skipped) or NPZ "
                                "with arrays X and y"},
    },
}


class DatasetGetArgsSchema(Schema):
    format = fields.String(load_default=None, allow_none=True,
                           validate=validate.OneOf(("json", "npz")))


class DatasetStatsSchema(Schema):
    X_mean = fields.List(fields.Float(), metadata={"description": "per feature"})
    X_std = fields.List(fields.Float())
    X_min = fields.List(fields.Float())
    X_max = fields.List(fields.Float())
    class_counts = fields.List(fields.Integer(), metadata={"description": "samples per class "
                                                                         "(labels only)"})


class DatasetDataSchema(DatasetSchema):
    """A dataset with its summary (by default), or with X and y (format=json)."""

    summary = fields.Nested(DatasetStatsSchema)
    X = fields.List(fields.List(fields.Float()))
    y = fields.List(fields.Raw())


def dataset_json(dataset: Dataset) -> dict:
    """A dataset as the API shows it (without its data)."""
    return {name: getattr(dataset, name) for name in DatasetSchema().fields}


def user_dataset(ref) -> Dataset:
    """The dataset ``ref`` (id or name) as this request's user sees it (NotFound for
    another user's)."""
    return datasets.visible_dataset(db(), ref, require_user())


@blp.route("")
class Datasets(MethodView):
    @blp.response(200, DatasetListSchema)
    def get(self):
        """Stored datasets, and the built-in names that can be used before they are stored."""
        return {"datasets": [dataset_json(d) for d in
                             store_datasets.list_datasets(db(), owner=require_user())],
                "builtin_available": list(datasets.BUILTIN_NAMES)}

    # Either body is documented here; the view parses whichever came (with the blueprint's
    # parser for JSON, so errors are the same as everywhere else).
    @blp.doc(requestBody={"required": True, "content": {
        "application/json": {"schema": DatasetUploadSchema},
        "multipart/form-data": {"schema": MULTIPART_UPLOAD}}})
    @blp.response(201, DatasetSchema)
    @blp.alt_response(400, response="BAD_REQUEST")
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS_OR_QUOTA")
    def post(self):
        """Upload a dataset: JSON {"name", "X", "y"}, or multipart with ``name`` and a CSV or
        NPZ ``file``."""
        if request.mimetype in FORM_TYPES:
            name, X, y = multipart_upload()
        else:
            schema = DatasetUploadSchema(limits=settings().limits)
            body = blp.ARGUMENTS_PARSER.parse(schema, request, location="json")
            name, X, y = body["name"], body["X"], body["y"]
        dataset = datasets.add_dataset(db(), name, X, y, require_user(), settings().limits)
        return dataset_json(dataset)


def multipart_upload():
    """(name, X, y) of a multipart upload: a ``name`` field and a CSV or NPZ ``file``, read
    from the uploaded stream (werkzeug spools a large one to disk) within the limits."""
    name = request.form.get("name", "")
    try:
        NAME_RULE(name)
    except ValidationError as exc:
        raise Invalid({"name": "; ".join(exc.messages)}) from None
    upload = request.files.get("file")
    if upload is None:
        raise Invalid({"file": "attach the data as a multipart field named file"})
    limits = settings().limits
    stream = upload.stream
    is_zip = stream.read(2) == b"PK"
    stream.seek(0)
    if (upload.filename or "").lower().endswith(".npz") or is_zip:
        return (name, *datasets.parse_npz(stream, limits))
    return (name, *datasets.parse_csv(stream, limits))


@blp.route("/<ref>")
class DatasetByRef(MethodView):
    @blp.arguments(DatasetGetArgsSchema, location="query")
    @blp.response(200, DatasetDataSchema)
    @blp.alt_response(200, description="NPZ (X, y) when format=npz",
                      schema={"type": "string", "format": "binary"},
                      content_type="application/octet-stream", success=True)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, ref):
        """A dataset's shape and summary; with format=json or npz, X and y themselves."""
        dataset = user_dataset(ref)
        body = dataset_json(dataset)
        if args.get("format") is None:
            body["summary"] = datasets.summary(dataset)
            return body
        X, y = store_datasets.dataset_arrays(dataset)
        if args["format"] == "npz":
            return Response(to_npz(X=X, y=y), mimetype="application/octet-stream",
                            headers={"Content-Disposition":
                                     f"attachment; filename={dataset.name}.npz"})
        body.update(X=X.tolist(), y=y.tolist())
        return body

    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, ref):
        """Delete one of your datasets (freeing its bytes from the per-user quota). 409
        in_use while runs refer to it (``fields.runs`` says how many: delete them first);
        409 builtin_dataset for a built-in one."""
        datasets.delete_dataset(db(), ref, require_user())
        return "", 204
