"""model kinds: an LLM generates text (chat) or embeds (embedding); usage rows name their endpoint

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('llm') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='chat'))
    with op.batch_alter_table('usagerecord') as batch:
        batch.add_column(sa.Column('endpoint', sa.String(length=16), nullable=False, server_default='chat'))


def downgrade() -> None:
    with op.batch_alter_table('usagerecord') as batch:
        batch.drop_column('endpoint')
    with op.batch_alter_table('llm') as batch:
        batch.drop_column('kind')
