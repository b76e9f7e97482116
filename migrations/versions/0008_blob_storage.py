"""store parameter blobs without PostgreSQL's compression

Revision ID: 0008_blob_storage
Revises: 0007_environment
Create Date: 2026-12-06

On PostgreSQL, ``params.data`` gets STORAGE EXTERNAL: still stored out of line (TOAST), but
without the server's pglz pass. Parameters are raw float arrays, which pglz works through
and then keeps as they were (they deflate by a few per cent at best), so that pass saved
nothing and cost a worker about 0.9 ms of its ~4.5 ms final transaction per run (a run's
two 38 KB parameter rows: 1.3 ms to insert, 0.43 ms without it; bench/README.md, "Measured
2026-12-06"). Rows stored before keep their storage; readers see the same bytes either way.
SQLite has no such setting: nothing changes there.
"""
from typing import Sequence, Union

from alembic import op

revision: str = '0008_blob_storage'
down_revision: Union[str, None] = '0007_environment'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _set_storage(storage: str) -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(f'ALTER TABLE params ALTER COLUMN data SET STORAGE {storage}')


def upgrade() -> None:
    _set_storage('EXTERNAL')


def downgrade() -> None:
    _set_storage('EXTENDED')
