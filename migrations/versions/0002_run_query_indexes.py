"""run query indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

(column, id) indexes on runs for GET /runs: keyset pages sorted by the column (ties broken
by id) and range filters on it (status, dataset and sweep indexes exist since 0001); on
PostgreSQL, runs.tags becomes JSONB.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# A copy, not an import: a migration must not change when the models do.
COLUMNS = ("created_at", "finished_at", "learning_rate", "batch_size", "epochs",
           "final_error", "best_error", "final_accuracy")


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.create_index(f'ix_runs_{column}_id', [column, 'id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        # tags as JSONB: tag equality becomes containment (@>), estimated from statistics
        op.alter_column('runs', 'tags', type_=postgresql.JSONB(), existing_type=sa.JSON(),
                        existing_nullable=False, postgresql_using='tags::jsonb')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.alter_column('runs', 'tags', type_=sa.JSON(), existing_type=postgresql.JSONB(),
                        existing_nullable=False, postgresql_using='tags::json')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        for column in reversed(COLUMNS):
            batch_op.drop_index(f'ix_runs_{column}_id')
