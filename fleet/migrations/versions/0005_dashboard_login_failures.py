"""dashboard_login_failures: the login rate limiter's failures, shared by every dashboard process on the store

Revision ID: 0005_dashboard_login_failures
Revises: 0004_device_latest_summary
"""
from alembic import op
import sqlalchemy as sa

revision = '0005_dashboard_login_failures'
down_revision = '0004_device_latest_summary'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dashboard_login_failures',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('key', sa.String(96), nullable=False),
        sa.Column('at', sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_login_failures')),
    )
    op.create_index('ix_dashboard_login_failures_key_at', 'dashboard_login_failures', ['key', 'at'])


def downgrade() -> None:
    op.drop_index('ix_dashboard_login_failures_key_at', table_name='dashboard_login_failures')
    op.drop_table('dashboard_login_failures')
