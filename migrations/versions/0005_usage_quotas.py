"""what runs and datasets occupy, for the per-user quotas and the float32 check

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

Datasets get ``n_bytes`` (the size of their stored data) and ``max_abs`` (the largest |value|
of X and y, so a float32 run on data beyond float32's range is refused at submit); runs get
``stored_bytes`` (the parameters and history a run may store: reserved at submit, settled
when it ends; 0 for a run cancelled before it started) and an (owner, status, stored_bytes)
index that counts a user's active runs and sums their bytes without reading the table. Existing rows
are filled in: a dataset's max_abs from its arrays, a finished run's stored_bytes from what it
stored, a queued or running run's from its spec (the formulas of service.store.usage as they
were when this migration was written).
"""
import json
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

from service.store.arrays import from_npz
from service.store.datasets import max_abs

revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

HISTORY_ROW_BYTES = 120
NPZ_ARRAY_BYTES = 256


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('n_bytes', sa.BigInteger(), server_default='0',
                                      nullable=False))
        batch_op.add_column(sa.Column('max_abs', sa.Float(), nullable=True))
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stored_bytes', sa.BigInteger(), server_default='0',
                                      nullable=False))
        batch_op.create_index('ix_runs_owner_status_stored_bytes',
                              ['owner', 'status', 'stored_bytes'], unique=False)
    connection = op.get_bind()
    op.execute("UPDATE datasets SET n_bytes = length(data)")
    for dataset_id, in connection.execute(sa.text("SELECT id FROM datasets")).all():
        data = connection.execute(sa.text("SELECT data FROM datasets WHERE id = :id"),
                                  {"id": dataset_id}).scalar()
        connection.execute(sa.text("UPDATE datasets SET max_abs = :m WHERE id = :id"),
                           {"m": _max_abs(data), "id": dataset_id})
    op.execute(
        "UPDATE runs SET stored_bytes = "
        f"(epochs_done + 1) * {HISTORY_ROW_BYTES} + "
        "COALESCE((SELECT SUM(length(data)) FROM params WHERE params.run_id = runs.id), 0) "
        "WHERE status NOT IN ('queued', 'running')")
    # A run cancelled before it started stored nothing.
    op.execute("UPDATE runs SET stored_bytes = 0 WHERE status = 'cancelled' AND started_at IS NULL")
    active = connection.execute(sa.text(
        "SELECT id, spec FROM runs WHERE status IN ('queued', 'running')")).all()
    for run_id, spec in active:
        connection.execute(sa.text("UPDATE runs SET stored_bytes = :b WHERE id = :id"),
                           {"b": _reserved(spec), "id": run_id})


def _max_abs(data):
    """The largest |value| of a dataset's X and y, or None when its data cannot be read."""
    try:
        arrays = from_npz(bytes(data))
        return max_abs(arrays["X"], arrays["y"])
    except Exception:  # not an NPZ of X and y: unknown
        return None


def _reserved(spec) -> int:
    """The bytes a queued or running run of ``spec`` may store (0 for a spec without
    layers)."""
    spec = json.loads(spec) if isinstance(spec, str) else (spec or {})
    layers, epochs = spec.get("layers") or [], spec.get("epochs") or 0
    if len(layers) < 2:
        return 0
    n_params = sum(a * b + b for a, b in zip(layers[:-1], layers[1:]))
    itemsize = 4 if spec.get("dtype") == "float32" else 8
    return (2 * (n_params * itemsize + 2 * (len(layers) - 1) * NPZ_ARRAY_BYTES)
            + (epochs + 1) * HISTORY_ROW_BYTES)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_owner_status_stored_bytes')
        batch_op.drop_column('stored_bytes')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('max_abs')
        batch_op.drop_column('n_bytes')
