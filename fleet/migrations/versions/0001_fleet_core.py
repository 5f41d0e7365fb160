"""fleet core tables: devices, telemetry, inference, events, rollups

Revision ID: 0001_fleet_core
Revises:
Create Date: 2026-11-29 23:28:26.307387
"""
from alembic import op
import sqlalchemy as sa


revision = '0001_fleet_core'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('devices',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('fleet', sa.String(length=64), nullable=False),
    sa.Column('provisioned', sa.Boolean(), nullable=False),
    sa.Column('provisioned_at', sa.Double(), nullable=True),
    sa.Column('revoked_at', sa.Double(), nullable=True),
    sa.Column('auth', sa.String(length=16), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('groups', sa.JSON(), nullable=False),
    sa.Column('online', sa.Boolean(), nullable=False),
    sa.Column('last_seen', sa.Double(), nullable=True),
    sa.Column('registered_at', sa.Double(), nullable=True),
    sa.Column('agent_version', sa.String(length=64), nullable=True),
    sa.Column('model_name', sa.String(length=128), nullable=True),
    sa.Column('model_version', sa.String(length=64), nullable=True),
    sa.Column('model_sha256', sa.String(length=64), nullable=True),
    sa.Column('capabilities', sa.JSON(), nullable=False),
    sa.Column('update_state', sa.String(length=32), nullable=True),
    sa.Column('update', sa.JSON(), nullable=False),
    sa.Column('state_ts', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_devices'))
    )
    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('received', sa.Double(), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('from_state', sa.String(length=32), nullable=True),
    sa.Column('to_state', sa.String(length=32), nullable=True),
    sa.Column('reason', sa.String(length=256), nullable=True),
    sa.Column('rollout_id', sa.String(length=64), nullable=True),
    sa.Column('model', sa.JSON(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    sa.UniqueConstraint('device_id', 'seq', 'ts', name=op.f('uq_events_device_id_seq_ts'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_device_ts', ['device_id', 'ts'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_rollout_id'), ['rollout_id'], unique=False)

    op.create_table('inference',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('errors', sa.BigInteger(), nullable=False),
    sa.Column('p50_ms', sa.Double(), nullable=True),
    sa.Column('p95_ms', sa.Double(), nullable=True),
    sa.Column('p99_ms', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inference')),
    sa.UniqueConstraint('device_id', 'seq', 'ts', 'model_version', name=op.f('uq_inference_device_id_seq_ts_model_version'))
    )
    with op.batch_alter_table('inference', schema=None) as batch_op:
        batch_op.create_index('ix_inference_device_ts', ['device_id', 'ts'], unique=False)

    op.create_table('inference_rollup',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('bucket', sa.Double(), nullable=False),
    sa.Column('bucket_seconds', sa.Integer(), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('errors', sa.BigInteger(), nullable=False),
    sa.Column('p50_ms', sa.Double(), nullable=True),
    sa.Column('p95_ms', sa.Double(), nullable=True),
    sa.Column('p95_max_ms', sa.Double(), nullable=True),
    sa.Column('p99_ms', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inference_rollup')),
    sa.UniqueConstraint('device_id', 'bucket', 'bucket_seconds', 'model_version', name=op.f('uq_inference_rollup_device_id_bucket_bucket_seconds_model_version'))
    )
    op.create_table('telemetry',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('received', sa.Double(), nullable=False),
    sa.Column('cpu', sa.Double(), nullable=True),
    sa.Column('mem', sa.Double(), nullable=True),
    sa.Column('temp', sa.Double(), nullable=True),
    sa.Column('disk', sa.Double(), nullable=True),
    sa.Column('load1', sa.Double(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_telemetry')),
    sa.UniqueConstraint('device_id', 'seq', 'ts', name=op.f('uq_telemetry_device_id_seq_ts'))
    )
    with op.batch_alter_table('telemetry', schema=None) as batch_op:
        batch_op.create_index('ix_telemetry_device_ts', ['device_id', 'ts'], unique=False)

    op.create_table('telemetry_rollup',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('bucket', sa.Double(), nullable=False),
    sa.Column('bucket_seconds', sa.Integer(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('cpu', sa.Double(), nullable=True),
    sa.Column('mem', sa.Double(), nullable=True),
    sa.Column('temp', sa.Double(), nullable=True),
    sa.Column('temp_max', sa.Double(), nullable=True),
    sa.Column('disk', sa.Double(), nullable=True),
    sa.Column('load1', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_telemetry_rollup')),
    sa.UniqueConstraint('device_id', 'bucket', 'bucket_seconds', name=op.f('uq_telemetry_rollup_device_id_bucket_bucket_seconds'))
    )


def downgrade() -> None:
    op.drop_table('telemetry_rollup')
    with op.batch_alter_table('telemetry', schema=None) as batch_op:
        batch_op.drop_index('ix_telemetry_device_ts')

    op.drop_table('telemetry')
    op.drop_table('inference_rollup')
    with op.batch_alter_table('inference', schema=None) as batch_op:
        batch_op.drop_index('ix_inference_device_ts')

    op.drop_table('inference')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_rollout_id'))
        batch_op.drop_index('ix_events_device_ts')

    op.drop_table('events')
    op.drop_table('devices')
