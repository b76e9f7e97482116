"""where each run trained, and reruns

Revision ID: 0007_environment
Revises: 0006_optimizers
Create Date: 2026-12-03

Runs get ``environment`` (JSON: the software, BLAS, CPU, dtype and dataset hash of the worker
that trained them; NULL for runs trained before) and ``rerun_of`` (the run a rerun repeats,
a foreign key set to NULL when that run is deleted, indexed to find a run's reruns).
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0007_environment'
down_revision: Union[str, None] = '0006_optimizers'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('environment', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column(
            'rerun_of', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.create_index('ix_runs_rerun_of', ['rerun_of'], unique=False)
        batch_op.create_foreign_key('fk_runs_rerun_of_runs', 'runs', ['rerun_of'], ['id'],
                                    ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_runs_rerun_of_runs', type_='foreignkey')
        batch_op.drop_index('ix_runs_rerun_of')
        batch_op.drop_column('rerun_of')
        batch_op.drop_column('environment')
