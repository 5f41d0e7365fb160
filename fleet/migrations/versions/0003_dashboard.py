"""dashboard tables: dashboard_users, dashboard_sessions, dashboard_tokens

Revision ID: 0003_dashboard
Revises: 0002_rollouts
"""
from alembic import op
import sqlalchemy as sa

revision = '0003_dashboard'
down_revision = '0002_rollouts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dashboard_users',
        sa.Column('name', sa.String(32), nullable=False),
        sa.Column('role', sa.String(16), nullable=False),
        sa.Column('password_hash', sa.String(256), nullable=False),
        sa.Column('created_at', sa.Double(), nullable=False),
        sa.Column('updated_at', sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_dashboard_users')),
    )
    op.create_table(
        'dashboard_sessions',
        sa.Column('token_sha256', sa.String(64), nullable=False),
        sa.Column('user', sa.String(32), nullable=False),
        sa.Column('csrf', sa.String(64), nullable=False),
        sa.Column('created_at', sa.Double(), nullable=False),
        sa.Column('expires_at', sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(['user'], ['dashboard_users.name'], ondelete='CASCADE',
                                name=op.f('fk_dashboard_sessions_user_dashboard_users')),
        sa.PrimaryKeyConstraint('token_sha256', name=op.f('pk_dashboard_sessions')),
    )
    op.create_table(
        'dashboard_tokens',
        sa.Column('token_sha256', sa.String(64), nullable=False),
        sa.Column('user', sa.String(32), nullable=False),
        sa.Column('name', sa.String(64), nullable=False),
        sa.Column('prefix', sa.String(16), nullable=False),
        sa.Column('created_at', sa.Double(), nullable=False),
        sa.Column('last_used', sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(['user'], ['dashboard_users.name'], ondelete='CASCADE',
                                name=op.f('fk_dashboard_tokens_user_dashboard_users')),
        sa.PrimaryKeyConstraint('token_sha256', name=op.f('pk_dashboard_tokens')),
    )


def downgrade() -> None:
    op.drop_table('dashboard_tokens')
    op.drop_table('dashboard_sessions')
    op.drop_table('dashboard_users')
