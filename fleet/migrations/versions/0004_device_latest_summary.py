"""device_latest (each device's newest system sample) and the inference time-window index

Revision ID: 0004_device_latest_summary
Revises: 0003_dashboard
"""
from alembic import op
import sqlalchemy as sa

revision = '0004_device_latest_summary'
down_revision = '0003_dashboard'
branch_labels = None
depends_on = None

_COLS = "device_id, ts, seq, cpu, mem, temp, disk, load1"


def upgrade() -> None:
    op.create_table(
        'device_latest',
        sa.Column('device_id', sa.String(64), nullable=False),
        sa.Column('ts', sa.Double(), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('cpu', sa.Double(), nullable=True),
        sa.Column('mem', sa.Double(), nullable=True),
        sa.Column('temp', sa.Double(), nullable=True),
        sa.Column('disk', sa.Double(), nullable=True),
        sa.Column('load1', sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_latest')),
    )
    # fill it from the samples already stored: the newest by ts, then seq ((device, seq, ts) is unique)
    op.execute(
        f"INSERT INTO device_latest ({_COLS}) "
        f"SELECT {', '.join('t.' + c for c in _COLS.split(', '))} FROM telemetry t "
        "JOIN (SELECT device_id, MAX(ts) AS ts FROM telemetry GROUP BY device_id) m "
        "ON t.device_id = m.device_id AND t.ts = m.ts "
        "WHERE NOT EXISTS (SELECT 1 FROM telemetry u WHERE u.device_id = t.device_id AND u.ts = t.ts "
        "AND u.seq > t.seq)")
    op.create_index('ix_inference_ts_window', 'inference',
                    ['ts', 'device_id', 'model_version', 'count', 'errors', 'p95_ms'])


def downgrade() -> None:
    op.drop_index('ix_inference_ts_window', table_name='inference')
    op.drop_table('device_latest')
