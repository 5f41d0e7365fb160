"""rollouts: bundle_payloads and bundle_schema (multi-payload bundles, manifest schema 2)

Revision ID: 0007_bundle_payloads
Revises: 0006_fleet_leases
"""
from alembic import op
import sqlalchemy as sa

revision = '0007_bundle_payloads'
down_revision = '0006_fleet_leases'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rollouts') as batch:
        batch.add_column(sa.Column('bundle_payloads', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('bundle_schema', sa.Integer(), nullable=False, server_default='1'))


def downgrade() -> None:
    with op.batch_alter_table('rollouts') as batch:
        batch.drop_column('bundle_schema')
        batch.drop_column('bundle_payloads')
