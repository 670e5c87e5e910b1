"""spend: prices per LLM, the cost of each request, budgets beside the rate limits

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('llm') as batch:
        for column in ('input_price', 'output_price'):
            batch.add_column(sa.Column(column, sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('cached_input_price', sa.Float(), nullable=True))
    with op.batch_alter_table('usagerecord') as batch:
        batch.add_column(sa.Column('cost', sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('group_id', sa.Integer(), nullable=True))
        batch.create_index('ix_usage_user_created', ['user_id', 'created_at'])
        batch.create_index('ix_usage_group_created', ['group_id', 'created_at'])
        batch.create_index('ix_usage_token_created', ['token_id', 'created_at'])
    with op.batch_alter_table('ratelimit') as batch:
        for column in ('budget_day', 'budget_month', 'budget_total'):
            batch.add_column(sa.Column(column, sa.Float(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('ratelimit') as batch:
        for column in ('budget_day', 'budget_month', 'budget_total'):
            batch.drop_column(column)
    with op.batch_alter_table('usagerecord') as batch:
        batch.drop_index('ix_usage_token_created')
        batch.drop_index('ix_usage_group_created')
        batch.drop_index('ix_usage_user_created')
        batch.drop_column('group_id')
        batch.drop_column('cost')
    with op.batch_alter_table('llm') as batch:
        for column in ('cached_input_price', 'output_price', 'input_price'):
            batch.drop_column(column)
