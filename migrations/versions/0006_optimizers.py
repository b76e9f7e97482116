"""optimizers: the run's optimizer and why it stopped

Revision ID: 0006_optimizers
Revises: 0005
Create Date: 2026-12-03

Runs get ``optimizer`` (copied out of the spec for filters and sorting; every run stored
before this revision trained with plain gradient descent, so existing rows get 'sgd'),
``stop_reason`` ('plateau' when stop_on_plateau ended the run, else NULL) and a
(best_epoch, id) index for keyset pages sorted by best_epoch.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0006_optimizers'
down_revision: Union[str, None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        # NOT NULL with a server default: the existing rows get 'sgd' as the column is added.
        batch_op.add_column(sa.Column('optimizer', sa.String(length=16), server_default='sgd',
                                      nullable=False))
        batch_op.add_column(sa.Column('stop_reason', sa.String(length=16), nullable=True))
        batch_op.create_index('ix_runs_best_epoch_id', ['best_epoch', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_best_epoch_id')
        batch_op.drop_column('stop_reason')
        batch_op.drop_column('optimizer')
