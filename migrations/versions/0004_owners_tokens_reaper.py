"""owners, tokens, idempotency keys, reaper columns

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Runs, sweeps and datasets get an owner (the user of the token that created them; dataset
names become unique per owner; existing rows go to user "local", built-in datasets to no
one); API tokens (hashes only) and idempotency keys get tables;
runs get ``enqueued_at`` (when their task message was handed to the broker) and a
(status, heartbeat_at) index for the reaper; runs.sweep_id becomes a foreign key.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=200), nullable=True))
        batch_op.drop_constraint('uq_datasets_name', type_='unique')
        batch_op.create_unique_constraint('uq_datasets_owner_name', ['owner', 'name'])
        batch_op.create_index('ix_datasets_owner', ['owner'], unique=False)
        batch_op.create_index('uq_datasets_public_name', ['name'], unique=True,
                              sqlite_where=sa.text('owner IS NULL'),
                              postgresql_where=sa.text('owner IS NULL'))
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=200), nullable=True))
        batch_op.create_index('ix_sweeps_owner', ['owner'], unique=False)
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_runs_owner_id', ['owner', 'id'], unique=False)
        batch_op.create_index('ix_runs_status_heartbeat_at', ['status', 'heartbeat_at'],
                              unique=False)
        batch_op.create_foreign_key('fk_runs_sweep_id_sweeps', 'sweeps', ['sweep_id'], ['id'],
                                    ondelete='CASCADE')
    # What exists was made before tokens: it goes to user "local" (the user `descent up`
    # creates a token for; elsewhere `descent token create --user local` reaches it).
    # Built-in datasets stay everyone's.
    op.execute("UPDATE runs SET owner = 'local' WHERE owner IS NULL")
    op.execute("UPDATE sweeps SET owner = 'local' WHERE owner IS NULL")
    op.execute("UPDATE datasets SET owner = 'local' WHERE owner IS NULL AND builtin = false")
    # Runs that exist were sent when they were created, except sweep cells still waiting.
    op.execute(
        "UPDATE runs SET enqueued_at = created_at WHERE id NOT IN "
        "(SELECT run_id FROM sweep_cells WHERE dispatched = false)"
    )
    op.create_table(
        'api_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user', sa.String(length=200), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('prefix', sa.String(length=16), nullable=False),
        sa.Column('label', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash')),
    )
    op.create_index('ix_api_tokens_user', 'api_tokens', ['user'], unique=False)
    op.create_table(
        'idempotency_keys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('owner', sa.String(length=200), nullable=False),
        sa.Column('endpoint', sa.String(length=64), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('request_hash', sa.String(length=64), nullable=False),
        sa.Column('resource_id', sa.BigInteger(), nullable=True),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_keys')),
        sa.UniqueConstraint('owner', 'endpoint', 'key',
                            name='uq_idempotency_keys_owner_endpoint_key'),
    )


def downgrade() -> None:
    op.drop_table('idempotency_keys')
    op.drop_index('ix_api_tokens_user', table_name='api_tokens')
    op.drop_table('api_tokens')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_runs_sweep_id_sweeps', type_='foreignkey')
        batch_op.drop_index('ix_runs_status_heartbeat_at')
        batch_op.drop_index('ix_runs_owner_id')
        batch_op.drop_column('enqueued_at')
        batch_op.drop_column('owner')
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.drop_index('ix_sweeps_owner')
        batch_op.drop_column('owner')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_index('uq_datasets_public_name')
        batch_op.drop_index('ix_datasets_owner')
        batch_op.drop_constraint('uq_datasets_owner_name', type_='unique')
        batch_op.create_unique_constraint('uq_datasets_name', ['name'])
        batch_op.drop_column('owner')
