"""SQLModel tables: users, groups, memberships, LLMs with their aliases and presets, grants, API tokens, usage
records, audit log."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, UniqueConstraint
from sqlalchemy.orm import relationship
from sqlmodel import Field, Relationship, SQLModel

from modelport.protocol.presets import MAX_PROMPT_TEXT


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; every stored timestamp is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _timestamp(*, index: bool = False, now: bool = False) -> Any:
    column = Column(DateTime(timezone=True), nullable=True, index=index)
    if now:
        return Field(default_factory=utcnow, sa_column=column)
    return Field(default=None, sa_column=column)


class UserSource(enum.StrEnum):
    LOCAL = "local"
    LDAP = "ldap"


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=128)
    display_name: str = Field(default="", max_length=256)
    email: str | None = Field(default=None, max_length=256)
    password_hash: str | None = Field(default=None, max_length=512)
    source: UserSource = Field(default=UserSource.LOCAL)
    is_admin: bool = False
    active: bool = True
    # Admin sessions carry it; raising it (password change, "sign out everywhere") ends every session.
    session_version: int = 0
    created_at: datetime | None = _timestamp(now=True)
    deleted_at: datetime | None = _timestamp()


class Group(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=128)
    description: str = Field(default="", max_length=1024)
    permissions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    priority: int = 0
    created_at: datetime | None = _timestamp(now=True)


class Membership(SQLModel, table=True):
    user_id: int = Field(foreign_key="user.id", primary_key=True, ondelete="CASCADE")
    group_id: int = Field(foreign_key="group.id", primary_key=True, ondelete="CASCADE")
    user: User = Relationship()
    group: Group = Relationship()


LLM_KINDS = ("chat", "embedding")  # an LLM generates text (chats, completions, responses) or embeds


class LLM(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=128)
    backend: str = Field(max_length=32)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    enabled: bool = True
    max_queue: int = 256
    # LLMs tried in order when this one cannot serve a request before its first delta.
    fallbacks: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # More deployments of it beyond ``default`` (its own backend and config): name -> {backend, config}.
    deployments: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Prices per million tokens, in the installation's currency (MODELPORT_CURRENCY); 0: free.
    input_price: float = Field(default=0.0, ge=0)
    output_price: float = Field(default=0.0, ge=0)
    cached_input_price: float | None = Field(default=None, ge=0)
    kind: str = Field(default="chat", max_length=16)  # chat (chat, completions, responses) or embedding
    # Its workers may all stop when it is idle (an autoscaler starts one for its queue): with no live worker,
    # a request waits in the queue instead of failing at once with 503 no_worker.
    scale_to_zero: bool = False
    created_at: datetime | None = _timestamp(now=True)


class Grant(SQLModel, table=True):
    group_id: int = Field(foreign_key="group.id", primary_key=True, ondelete="CASCADE")
    llm_id: int = Field(foreign_key="llm.id", primary_key=True, ondelete="CASCADE")
    group: Group = Relationship()
    llm: LLM = Relationship()


class ModelAlias(SQLModel, table=True):
    """Another name for an LLM: requests for it are served by the LLM, and answered under the alias."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=128)
    llm_id: int = Field(foreign_key="llm.id", index=True, ondelete="CASCADE")
    llm: LLM = Relationship()
    created_at: datetime | None = _timestamp(now=True)


class AliasGrant(SQLModel, table=True):
    """A group may use an alias (and through it, only it, its LLM)."""

    group_id: int = Field(foreign_key="group.id", primary_key=True, ondelete="CASCADE")
    alias_id: int = Field(foreign_key="modelalias.id", primary_key=True, ondelete="CASCADE")
    group: Group = Relationship()
    alias: ModelAlias = Relationship()


class PresetVisibility(enum.StrEnum):
    PUBLIC = "public"  # everyone who may use its LLM
    GROUP = "group"  # the members of its group
    PRIVATE = "private"  # its owner



class Preset(SQLModel, table=True):
    """A bot (Kuwa's word): an LLM with a system prompt, text around the user's prompt and default
    parameters; ``max_tokens`` is also a cap. Its owner (none: administrators only) manages it."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=128)
    llm_id: int = Field(foreign_key="llm.id", index=True, ondelete="CASCADE")
    description: str = Field(default="", max_length=1024)
    system_prompt: str = Field(default="", max_length=MAX_PROMPT_TEXT)
    before_prompt: str = Field(default="", max_length=MAX_PROMPT_TEXT)
    after_prompt: str = Field(default="", max_length=MAX_PROMPT_TEXT)
    client_system: bool = True  # whether clients may add system messages after the preset's
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    visibility: PresetVisibility = Field(default=PresetVisibility.PUBLIC)
    group_id: int | None = Field(default=None, foreign_key="group.id", ondelete="CASCADE")
    owner_id: int | None = Field(default=None, foreign_key="user.id", index=True, ondelete="CASCADE")
    enabled: bool = True
    llm: LLM = Relationship()
    # Named explicitly: SQLModel cannot read "X | None" as a relationship's target under postponed annotations.
    group: Group | None = Relationship(sa_relationship=relationship("Group"))
    owner: User | None = Relationship(sa_relationship=relationship("User"))
    created_at: datetime | None = _timestamp(now=True)


class ApiToken(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("secret_hash"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    name: str = Field(default="", max_length=128)
    prefix: str = Field(index=True, max_length=16)
    secret_hash: str = Field(max_length=64)
    user: User = Relationship()
    created_at: datetime | None = _timestamp(now=True)
    expires_at: datetime | None = _timestamp()
    revoked_at: datetime | None = _timestamp()
    last_used_at: datetime | None = _timestamp()


class LimitScope(enum.StrEnum):
    TOKEN = "token"
    USER = "user"
    GROUP = "group"


class RateLimit(SQLModel, table=True):
    """Limits of one token, user or group; 0 means unlimited. A request must pass all that apply."""

    __table_args__ = (UniqueConstraint("scope", "subject_id"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: LimitScope
    subject_id: int
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    tokens_per_day: int = 0
    concurrent_requests: int = 0
    # Budgets in the installation's currency: per day and per calendar month (installation time zone), and
    # in all; 0 means none.
    budget_day: float = 0.0
    budget_month: float = 0.0
    budget_total: float = 0.0


class UsageRecord(SQLModel, table=True):
    __table_args__ = (Index("ix_usage_model_created", "model", "created_at"),
                      Index("ix_usage_user_created", "user_id", "created_at"),
                      Index("ix_usage_group_created", "group_id", "created_at"),
                      Index("ix_usage_token_created", "token_id", "created_at"))

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime | None = _timestamp(index=True, now=True)
    job_id: str = Field(max_length=64, index=True)
    user_id: int | None = Field(default=None, index=True)
    token_id: int | None = None
    model: str = Field(max_length=128)
    stream: bool = False
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    ttft_ms: int | None = None
    cost: float = 0.0  # what the request was charged, at the prices of the time, in the installation's currency
    group_id: int | None = None  # the group it is charged to (the user's highest-priority group), for chargeback
    endpoint: str = Field(default="chat", max_length=16)  # chat, completions, embeddings or responses


class AuditEntry(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime | None = _timestamp(index=True, now=True)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    target: str = Field(default="", max_length=256)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
