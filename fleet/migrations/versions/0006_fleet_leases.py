"""fleet_leases: the lease (holder, epoch = fencing token, expiry) that elects the replica running the rollout engine

Revision ID: 0006_fleet_leases
Revises: 0005_dashboard_login_failures
"""
from alembic import op
import sqlalchemy as sa

revision = '0006_fleet_leases'
down_revision = '0005_dashboard_login_failures'
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        'fleet_leases',
        sa.Column('name', sa.String(64), nullable=False),
        sa.Column('holder', sa.String(128), nullable=True),
        sa.Column('epoch', sa.BigInteger(), nullable=False),
        sa.Column('expires_at', sa.Double(), nullable=False),
        sa.Column('changed_at', sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_fleet_leases')),
    )
    op.bulk_insert(table, [{'name': 'rollout-engine', 'holder': None, 'epoch': 0, 'expires_at': 0.0,
                            'changed_at': 0.0}])


def downgrade() -> None:
    op.drop_table('fleet_leases')
