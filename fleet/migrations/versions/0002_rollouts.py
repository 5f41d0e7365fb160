"""rollout tables: rollouts, rollout_devices, rollout_audit, desired_states

Revision ID: 0002_rollouts
Revises: 0001_fleet_core
"""
from alembic import op
import sqlalchemy as sa

revision = '0002_rollouts'
down_revision = '0001_fleet_core'
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'rollouts',
        sa.Column('id', sa.String(64), nullable=False),
        sa.Column('fleet', sa.String(64), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('bundle_name', sa.String(128), nullable=False),
        sa.Column('bundle_version', sa.String(64), nullable=False),
        sa.Column('bundle_sha256', sa.String(64), nullable=False),
        sa.Column('bundle_url', sa.String(512), nullable=False),
        sa.Column('bundle_size', sa.BigInteger(), nullable=False),
        sa.Column('target', sa.String(512), nullable=False),
        sa.Column('devices', sa.JSON(), nullable=False),
        sa.Column('policy', sa.JSON(), nullable=False),
        sa.Column('state', sa.String(32), nullable=False),
        sa.Column('stage', sa.Integer(), nullable=False),
        sa.Column('stage_started_at', sa.Double(), nullable=True),
        sa.Column('soak_started_at', sa.Double(), nullable=True),
        sa.Column('acknowledged_at', sa.Double(), nullable=True),
        sa.Column('reverted', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.Double(), nullable=False),
        sa.Column('updated_at', sa.Double(), nullable=False),
        sa.Column('finished_at', sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_rollouts')),
    )
    op.create_index(op.f('ix_rollouts_state'), 'rollouts', ['state'])
    op.create_table(
        'rollout_devices',
        sa.Column('rollout_id', sa.String(64), nullable=False),
        sa.Column('device_id', sa.String(64), nullable=False),
        sa.Column('stage', sa.Integer(), nullable=False),
        sa.Column('assigned_at', sa.Double(), nullable=False),
        sa.Column('previous', sa.JSON(), nullable=True),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('status_at', sa.Double(), nullable=True),
        sa.Column('reason', sa.String(512), nullable=True),
        sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], ondelete='CASCADE',
                                name=op.f('fk_rollout_devices_rollout_id_rollouts')),
        sa.PrimaryKeyConstraint('rollout_id', 'device_id', name=op.f('pk_rollout_devices')),
    )
    op.create_table(
        'rollout_audit',
        sa.Column('id', _BigId, nullable=False, autoincrement=True),
        sa.Column('rollout_id', sa.String(64), nullable=False),
        sa.Column('ts', sa.Double(), nullable=False),
        sa.Column('actor', sa.String(32), nullable=False),
        sa.Column('event', sa.String(32), nullable=False),
        sa.Column('from_state', sa.String(32), nullable=True),
        sa.Column('to_state', sa.String(32), nullable=True),
        sa.Column('stage', sa.Integer(), nullable=True),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('numbers', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_rollout_audit')),
    )
    op.create_index('ix_rollout_audit_rollout_ts', 'rollout_audit', ['rollout_id', 'ts'])
    op.create_table(
        'desired_states',
        sa.Column('device_id', sa.String(64), nullable=False),
        sa.Column('model', sa.JSON(), nullable=True),
        sa.Column('rollout_id', sa.String(64), nullable=True),
        sa.Column('updated_at', sa.Double(), nullable=False),
        sa.Column('generation', sa.Integer(), nullable=False),
        sa.Column('published_generation', sa.Integer(), nullable=False),
        sa.Column('published_at', sa.Double(), nullable=True),
        sa.Column('publish_count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('device_id', name=op.f('pk_desired_states')),
    )


def downgrade() -> None:
    op.drop_table('desired_states')
    op.drop_index('ix_rollout_audit_rollout_ts', table_name='rollout_audit')
    op.drop_table('rollout_audit')
    op.drop_table('rollout_devices')
    op.drop_index(op.f('ix_rollouts_state'), table_name='rollouts')
    op.drop_table('rollouts')
