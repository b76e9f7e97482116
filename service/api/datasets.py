"""/api/v1/datasets: upload (CSV, NPZ or JSON), list, inspect and download datasets."""

import csv
import io

import numpy as np
from flask import Response, request
from flask.views import MethodView
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy.exc import IntegrityError

import kernels
from service.store import Dataset
from service.store import datasets as store_datasets
from service.store.arrays import to_npz

from .auth import require_user
from .context import db, settings
from .errors import ApiError
from .parser import FORM_TYPES, Blueprint
from .schemas import StrictFloat, UtcDateTime

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
    return {name: getattr(dataset, name) for name in DatasetSchema().fields}


# Largest id the datasets table (INTEGER) can hold; larger ids name no dataset.
MAX_DATASET_ID = 2**31 - 1


def resolve_dataset(session, ref, create_builtin: bool = True):
    """A dataset of this request's user or a public one (built-in), by id or name; the
    user's own name shadows a public one. Another user's dataset is None, like a missing
    one. A built-in is stored the first time it is named. Every route that names a
    dataset goes through here."""
    user = require_user()
    if (isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit())) \
            and not 0 < int(ref) <= MAX_DATASET_ID:
        return None
    dataset = store_datasets.find_dataset(session, ref, owner=user)
    if dataset is None and create_builtin and ref in kernels.BUILTIN_DATASETS:
        X, y = kernels.load_dataset(ref)
        dataset = store_datasets.add_dataset_once(session, ref, X, y, builtin=True)
        session.commit()
    return dataset


def get_dataset_or_404(ref):
    """The dataset ``ref`` (id or name) as this request's user sees it (resolve_dataset);
    another user's dataset is a 404, the same as a missing one."""
    dataset = resolve_dataset(db(), ref)
    if dataset is None:
        raise ApiError(404, "not_found", f"no dataset {ref!r}")
    return dataset


def _bad(field: str, message: str) -> ApiError:
    return ApiError(422, "validation_error", f"invalid {field}", {field: message})


def checked_arrays(X, y) -> tuple[np.ndarray, np.ndarray]:
    """X as 2-D float64 and y as int labels or floats, within the configured rows and
    columns; ApiError 422 naming X or y (NaN, infinities, ragged rows, non-numbers, labels
    out of range, empty data, different lengths)."""
    limits = settings().limits
    if isinstance(X, np.ndarray) and X.dtype.kind not in "biuf":
        raise _bad("X", f"expected numbers, got an array of {X.dtype}")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise _bad("X", "rows must all have the same number of numbers") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise _bad("X", "expected a non-empty 2-D array (rows of features)")
    if X.shape[0] > limits.max_samples:
        raise _bad("X", f"{X.shape[0]} rows; the limit is {limits.max_samples}")
    if X.shape[1] > limits.max_features:
        raise _bad("X", f"{X.shape[1]} columns; the limit is {limits.max_features}")
    if not np.isfinite(X).all():
        raise _bad("X", "contains NaN or infinity")
    try:
        y = np.asarray(y)
    except (TypeError, ValueError):  # ragged
        y = np.empty(0, dtype=object)
    if y.dtype == object or y.ndim not in (1, 2):
        raise _bad("y", "expected a list of numbers (labels or values) or of rows")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuf":
        raise _bad("y", f"expected numbers, got {y.dtype}")
    if y.shape[0] != X.shape[0]:
        raise _bad("y", f"has {y.shape[0]} rows but X has {X.shape[0]}")
    if y.ndim == 2 and not 0 < y.shape[1] <= limits.max_width:
        raise _bad("y", f"target rows need 1 to {limits.max_width} values")
    if y.dtype.kind in "iu":
        if y.ndim != 1:
            y = y.astype(np.float64)
        elif y.min() < 0:
            raise _bad("y", "class labels must be >= 0")
        elif y.max() >= limits.max_width:
            # n_classes outputs: a label no network within the limits can have.
            raise _bad("y", f"class labels must be below {limits.max_width} (the widest "
                            f"layer allowed); got {y.max()}")
        else:
            y = y.astype(np.int64)
    if y.dtype.kind == "f":
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise _bad("y", "contains NaN or infinity")
    return np.ascontiguousarray(X), np.ascontiguousarray(y)


def parse_csv(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of numbers, the last column being y (a header row is skipped)."""
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline=""))
                if row and any(c.strip() for c in row)]
    except csv.Error as exc:  # a stray carriage return or NUL, an unclosed quote
        raise ApiError(422, "validation_error", "invalid file",
                       {"file": f"not a CSV file: {exc}"}) from None
    if rows:
        try:
            [float(c) for c in rows[0]]
        except ValueError:
            rows = rows[1:]  # header
    if not rows:
        raise ApiError(422, "validation_error", "invalid file", {"file": "no data rows"})
    try:
        table = np.array([[float(c) for c in row] for row in rows])
    except ValueError as exc:
        raise ApiError(422, "validation_error", "invalid file",
                       {"file": f"not a table of numbers: {exc}"}) from None
    if table.ndim != 2 or table.shape[1] < 2:
        raise ApiError(422, "validation_error", "invalid file",
                       {"file": "expected at least two columns (features..., target)"})
    y = table[:, -1]
    # Whole numbers are class labels (not infinities, nor ones too large for int64).
    if np.isfinite(y).all() and np.all(y == np.round(y)) and np.abs(y).max() < 2**53:
        y = y.astype(np.int64)
    return table[:, :-1], y


def parse_npz(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Arrays X and y of an NPZ file."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if "X" not in npz.files or "y" not in npz.files:
                raise ApiError(422, "validation_error", "invalid file",
                               {"file": "an NPZ upload needs arrays named X and y"})
            return npz["X"], npz["y"]
    except ApiError:
        raise
    except Exception as exc:
        raise ApiError(422, "validation_error", "invalid file",
                       {"file": f"not a readable NPZ file: {exc}"}) from None


@blp.route("")
class Datasets(MethodView):
    @blp.response(200, DatasetListSchema)
    def get(self):
        """Stored datasets, and the built-in names that can be used before they are stored."""
        return {"datasets": [dataset_json(d) for d in
                             store_datasets.list_datasets(db(), owner=require_user())],
                "builtin_available": list(kernels.BUILTIN_DATASETS)}

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
    def post(self):
        """Upload a dataset: JSON {"name", "X", "y"}, or multipart with ``name`` and a CSV or
        NPZ ``file``."""
        if request.mimetype in FORM_TYPES:
            name = request.form.get("name", "")
            try:
                NAME_RULE(name)
            except ValidationError as exc:
                raise ApiError(422, "validation_error", "invalid name",
                               {"name": "; ".join(exc.messages)}) from None
            upload = request.files.get("file")
            if upload is None:
                raise ApiError(422, "validation_error", "invalid file",
                               {"file": "attach the data as a multipart field named file"})
            data = upload.read()
            filename = (upload.filename or "").lower()
            if filename.endswith(".npz") or data[:2] == b"PK":
                X, y = parse_npz(data)
            else:
                X, y = parse_csv(data.decode("utf-8", errors="replace"))
        else:
            body = blp.ARGUMENTS_PARSER.parse(DatasetUploadSchema(), request, location="json")
            name, X, y = body["name"], body["X"], body["y"]
        X, y = checked_arrays(X, y)
        session = db()
        user = require_user()
        # Names are per user; a stored public dataset's name may be taken (and shadowed).
        if name in kernels.BUILTIN_DATASETS \
                or store_datasets.find_own_dataset(session, name, user):
            raise ApiError(409, "name_taken", f"a dataset named {name!r} exists",
                           {"name": "already taken"})
        try:
            dataset = store_datasets.add_dataset(session, name, X, y, owner=user)
            session.commit()
        except IntegrityError:  # uploaded by someone else since the check above
            session.rollback()
            raise ApiError(409, "name_taken", f"a dataset named {name!r} exists",
                           {"name": "already taken"}) from None
        return dataset_json(dataset)


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
        dataset = get_dataset_or_404(ref)
        body = dataset_json(dataset)
        if args.get("format") is None:
            X, y = store_datasets.dataset_arrays(dataset)
            body["summary"] = {"X_mean": X.mean(axis=0).tolist(), "X_std": X.std(axis=0).tolist(),
                               "X_min": X.min(axis=0).tolist(), "X_max": X.max(axis=0).tolist()}
            if dataset.target_kind == "labels":
                body["summary"]["class_counts"] = np.bincount(y).tolist()
            return body
        X, y = store_datasets.dataset_arrays(dataset)
        if args["format"] == "npz":
            return Response(to_npz(X=X, y=y), mimetype="application/octet-stream",
                            headers={"Content-Disposition":
                                     f"attachment; filename={dataset.name}.npz"})
        body.update(X=X.tolist(), y=y.tolist())
        return body
