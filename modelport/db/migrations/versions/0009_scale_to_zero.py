"""scale to zero: an LLM whose workers may all stop when idle keeps taking requests into its queue

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 15:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('llm') as batch:
        batch.add_column(sa.Column('scale_to_zero', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('llm') as batch:
        batch.drop_column('scale_to_zero')
