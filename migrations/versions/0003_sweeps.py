"""sweeps

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


RUN_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("base", sa.JSON(), nullable=False),
        sa.Column("space", sa.JSON(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("trials", sa.Integer(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("max_concurrency", sa.Integer(), nullable=True),
        sa.Column("early_stopping", sa.JSON(), nullable=True),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    op.create_table(
        "sweep_cells",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("dispatched", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE",
                                name=op.f("fk_sweep_cells_run_id_runs")),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"], ondelete="CASCADE",
                                name=op.f("fk_sweep_cells_sweep_id_sweeps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep_cells")),
        sa.UniqueConstraint("run_id", name=op.f("uq_sweep_cells_run_id")),
        sa.UniqueConstraint("sweep_id", "config_hash",
                            name="uq_sweep_cells_sweep_id_config_hash"),
    )
    op.create_index("ix_sweep_cells_sweep_id_dispatched_position", "sweep_cells",
                    ["sweep_id", "dispatched", "position"])
    op.create_table(
        "sweep_rungs",
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("promoted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE",
                                name=op.f("fk_sweep_rungs_run_id_runs")),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"], ondelete="CASCADE",
                                name=op.f("fk_sweep_rungs_sweep_id_sweeps")),
        sa.PrimaryKeyConstraint("sweep_id", "rung", "run_id", name=op.f("pk_sweep_rungs")),
    )


def downgrade() -> None:
    op.drop_table("sweep_rungs")
    op.drop_index("ix_sweep_cells_sweep_id_dispatched_position", table_name="sweep_cells")
    op.drop_table("sweep_cells")
    op.drop_table("sweeps")
