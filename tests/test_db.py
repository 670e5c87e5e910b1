"""Schema and directory on SQLite and PostgreSQL: migrations, tokens stored only as SHA-256, permissions."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, inspect
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.db import directory, edits, queries, virtual_models
from modelport.db.engine import create_engine, session_factory
from modelport.db.migrate import upgrade_async
from modelport.db.tables import ApiToken, AuditEntry, PresetVisibility
from modelport.gateway.auth import Authenticator
from modelport.protocol.errors import InvalidRequest, NotFound
from modelport.protocol.presets import PresetSettings
from tests.conftest import DATABASES, new_database


@pytest.fixture(params=DATABASES)
async def session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[AsyncSession]:
    url = new_database(request.param, request, tmp_path_factory)
    await upgrade_async(url)
    engine = create_engine(url)
    async with session_factory(engine)() as opened:
        yield opened
    await engine.dispose()


async def test_migrations_create_every_table(session: AsyncSession) -> None:
    connection = await session.connection()
    tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert {"user", "group", "membership", "llm", "grant", "apitoken", "usagerecord", "auditentry"} <= tables


async def test_tokens_are_stored_as_sha256_only(session: AsyncSession) -> None:
    await directory.add_user(session, "test", "ada", password="correct horse")
    token = await directory.create_token(session, "test", "ada", name="laptop")
    [stored] = (await session.exec(select(ApiToken))).all()
    assert stored.secret_hash == hashlib.sha256(token.secret.encode()).hexdigest()
    assert token.secret not in stored.model_dump_json()
    assert len(token.secret) >= 43 and stored.prefix == token.secret[:12]
    owner = await queries.token_owner(session, stored.secret_hash)
    assert owner is not None and owner.user_name == "ada" and not owner.revoked


async def test_permissions_follow_groups_and_grants(session: AsyncSession) -> None:
    await directory.add_user(session, "test", "bob")
    await directory.add_group(session, "test", "lab")
    await directory.add_llm(session, "test", "m1", "fake", {})
    await directory.add_llm(session, "test", "m2", "fake", {})
    await directory.join(session, "test", "bob", "lab")
    await directory.grant(session, "test", "lab", "m1")
    token = await directory.create_token(session, "test", "bob")
    assert await models_of(session, token.secret_hash) == frozenset({"m1"})
    await directory.revoke_token(session, "test", token.prefix)
    owner = await queries.token_owner(session, token.secret_hash)
    assert owner is not None and owner.revoked
    actions = [entry.action for entry in (await session.exec(select(AuditEntry))).all()]
    assert actions.count("llm.add") == 2 and "token.revoke" in actions


async def models_of(session: AsyncSession, secret_hash: str) -> frozenset[str]:
    """The names a token's owner may send, composed as the gateway does (their groups' grants, their presets)."""
    owner = await queries.token_owner(session, secret_hash)
    assert owner is not None
    return (await queries.group_grants(session, owner.groups)).with_own(owner.own_presets)


async def test_directory_rejects_duplicates_bad_names_and_unknowns(session: AsyncSession) -> None:
    await directory.add_group(session, "test", "g")
    with pytest.raises(InvalidRequest):
        await directory.add_group(session, "test", "g")
    with pytest.raises(InvalidRequest):
        await directory.add_llm(session, "test", "bad{name}", "fake", {})
    with pytest.raises(NotFound):
        await directory.join(session, "test", "nobody", "g")
    with pytest.raises(NotFound):
        await directory.revoke_token(session, "test", "mp-nothing")


async def test_aliases_and_presets_share_the_model_namespace_and_owners_are_bounded(session: AsyncSession) -> None:
    await directory.add_user(session, "test", "carol")
    await directory.add_group(session, "test", "class")
    await directory.join(session, "test", "carol", "class")
    await directory.add_llm(session, "test", "base", "fake", {})
    await virtual_models.add_alias(session, "test", "nick", "base")
    await directory.grant(session, "test", "class", "nick")
    for taken in ("base", "nick"):
        with pytest.raises(InvalidRequest):
            await virtual_models.add_preset(session, "test", taken, "base", PresetSettings())
    for number in range(virtual_models.MAX_PRESETS_PER_OWNER):
        await virtual_models.add_preset(session, "test", f"p{number}", "base", PresetSettings(),
                                        visibility=PresetVisibility.PRIVATE, owner_name="carol")
    with pytest.raises(InvalidRequest, match="the most one user may own"):
        await virtual_models.add_preset(session, "test", "one-more", "base", PresetSettings(),
                                        visibility=PresetVisibility.PRIVATE, owner_name="carol")
    token = await directory.create_token(session, "test", "carol")
    assert await models_of(session, token.secret_hash) == frozenset({"nick"}), "an alias alone; presets need their LLM"


async def test_a_burst_after_the_cache_expired_loads_the_catalog_and_a_token_once(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two hundred requests arriving together with nothing cached (a gateway's start, the cache's expiry, an
    announced change) make one catalog query and one token query, not one each."""
    url = f"sqlite:///{tmp_path_factory.mktemp('burst') / 'db.sqlite'}"
    await upgrade_async(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    async with sessions() as session:
        await directory.add_llm(session, "test", "m1", "fake", {})
        await directory.add_user(session, "test", "eve")
        token = await directory.create_token(session, "test", "eve")
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    auth = Authenticator(sessions, ttl_s=30)
    catalogs = await asyncio.gather(*(auth.catalog() for _ in range(200)))
    catalog_queries = len(statements)
    principals = await asyncio.gather(*(auth.principal(f"Bearer {token.secret}") for _ in range(200)))
    assert all(catalog == catalogs[0] for catalog in catalogs) and "m1" in catalogs[0]
    assert {principal.user_name for principal in principals} == {"eve"}
    token_queries = statements[catalog_queries:]
    assert catalog_queries <= 4 and len(token_queries) <= 8, statements
    assert sum("FROM apitoken" in sql for sql in token_queries) == 1, token_queries
    assert sum("FROM llm JOIN grant" in sql for sql in token_queries) == 1, token_queries
    auth.invalidate()
    await asyncio.gather(*(auth.catalog() for _ in range(200)))
    assert len(statements) <= 2 * catalog_queries + 8
    await engine.dispose()


async def test_new_tokens_of_one_groups_members_read_its_grants_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    """What a set of groups grants is read once for all their members' tokens; a member's private preset of a
    granted LLM is theirs alone, and an announced change is read afresh."""
    url = f"sqlite:///{tmp_path_factory.mktemp('grants') / 'db.sqlite'}"
    await upgrade_async(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    async with sessions() as session:
        await directory.add_group(session, "test", "team")
        for number in range(50):
            await directory.add_llm(session, "test", f"m{number}", "fake", {})
            await directory.grant(session, "test", "team", f"m{number}")
        secrets = {}
        for name in ("ann", "ben", "cid"):
            await directory.add_user(session, "test", name)
            await directory.join(session, "test", name, "team")
            secrets[name] = (await directory.create_token(session, "test", name)).secret
        await virtual_models.add_preset(session, "test", "ann-terse", "m0", PresetSettings(),
                                        visibility=PresetVisibility.PRIVATE, owner_name="ann")
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    auth = Authenticator(sessions, ttl_s=30)
    principals = {name: await auth.principal(f"Bearer {secret}") for name, secret in secrets.items()}
    assert sum("FROM llm JOIN grant" in sql for sql in statements) == 1, statements
    granted = {f"m{number}" for number in range(50)}
    assert principals["ann"].models == granted | {"ann-terse"}
    assert principals["ben"].models == principals["cid"].models == granted
    async with sessions() as session:
        await edits.revoke_grant(session, "test", "team", "m1")
    auth.invalidate()
    assert "m1" not in (await auth.principal(f"Bearer {secrets['ben']}")).models
    assert sum("FROM llm JOIN grant" in sql for sql in statements) == 2
    await engine.dispose()
