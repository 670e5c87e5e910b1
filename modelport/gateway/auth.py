"""Bearer-token authentication and model permissions from an in-process cache.

The database is read only on a miss (one load per token, shared by concurrent requests); what a set of
groups grants is read once for all the tokens of their members, so a new token costs the same however many
models its groups were granted. Every entry is dropped when any gateway-relevant row changes (a Redis
pub/sub message) and after a short TTL.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, cast

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.broker.limits import LimitSubject
from modelport.db import queries
from modelport.db.engine import serving_session
from modelport.db.queries import Grants, ModelEntry, TokenOwner
from modelport.db.secrets import hash_token
from modelport.protocol.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied

MAX_ENTRIES = 50_000
CATALOG = "catalog"  # the catalog's key among loads under way (the others: token hashes in hex, "groups:…")
T = TypeVar("T")
K = TypeVar("K")
Owner = tuple[TokenOwner, frozenset[str]]  # a token's owner and every model name they may send


@dataclass(frozen=True)
class Principal:
    token_id: int
    user_id: int
    user_name: str
    models: frozenset[str]
    limits: tuple[LimitSubject, ...]
    priority: int
    group_id: int


class Authenticator:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl_s: float) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._owners: dict[str, tuple[float, Owner | None]] = {}
        self._grants: dict[frozenset[int], tuple[float, Grants]] = {}
        self._loading: dict[str, asyncio.Future[Any]] = {}  # loads under way: token hashes, group sets, CATALOG
        self._catalog: tuple[float, dict[str, ModelEntry]] | None = None
        self._generation = 0

    def invalidate(self) -> None:
        """Forget what was loaded; loads under way are not joined any more (they may predate the change)."""
        self._owners.clear()
        self._grants.clear()
        self._catalog = None
        self._loading.clear()
        self._generation += 1

    async def principal(self, authorization: str | None) -> Principal:
        secret = _bearer(authorization)
        secret_hash = hash_token(secret)
        found = await self._owner(secret_hash)
        if found is None or not hmac.compare_digest(found[0].secret_hash, secret_hash):
            raise AuthenticationFailed("Incorrect API key provided.")
        owner, models = found
        if owner.revoked:
            raise AuthenticationFailed("This API key has been revoked.", code="token_revoked")
        if owner.expires_at is not None and owner.expires_at <= datetime.now(UTC):
            raise AuthenticationFailed("This API key has expired.", code="token_expired")
        if not owner.usable:
            raise AuthenticationFailed("The account owning this API key is disabled.", code="account_disabled")
        return Principal(owner.token_id, owner.user_id, owner.user_name, models, owner.limits, owner.priority,
                         owner.group_id)

    async def catalog(self) -> dict[str, ModelEntry]:
        """Every enabled model, for telling an unknown model (404) from a forbidden one (403)."""
        if self._catalog is not None and self._catalog[0] > time.monotonic():
            return self._catalog[1]

        def keep(models: dict[str, ModelEntry]) -> None:
            self._catalog = (time.monotonic() + self._ttl_s, models)

        return await self._load_once(CATALOG, lambda: self._read(queries.enabled_models), keep)

    async def permitted_model(self, principal: Principal, model: str, kind: str = "chat") -> ModelEntry:
        """The entry of a model the principal may use, of the ``kind`` the endpoint serves (chat or embedding);
        a preset they may not see does not exist for them."""
        entry = (await self.catalog()).get(model)
        if entry is None or (entry.preset is not None and model not in principal.models):
            raise NotFound(f"The model '{model}' does not exist.", code="model_not_found", param="model")
        if model not in principal.models:
            raise PermissionDenied(f"You are not permitted to use the model '{model}'.", param="model")
        if entry.kind != kind:
            serves = ("/v1/embeddings" if entry.kind == "embedding"
                      else "/v1/chat/completions, /v1/completions, /v1/responses")
            raise InvalidRequest(f"The model '{model}' does not serve this endpoint: it is of kind {entry.kind} (use "
                                 f"it with {serves}).", code="wrong_model_kind", param="model")
        return entry

    async def _owner(self, secret_hash: str) -> Owner | None:
        async def load() -> Owner | None:
            owner = await self._read(partial(queries.token_owner, secret_hash=secret_hash))
            if owner is None:
                return None
            return owner, (await self._granted(owner.groups)).with_own(owner.own_presets)

        return await self._cached(self._owners, secret_hash, secret_hash, load)

    async def _granted(self, groups: frozenset[int]) -> Grants:
        """What ``groups`` grant, read once for all their members' tokens."""
        return await self._cached(self._grants, groups, "groups:" + ",".join(map(str, sorted(groups))),
                                  lambda: self._read(partial(queries.group_grants, groups=groups)))

    async def _cached(self, store: dict[K, tuple[float, T]], key: K, loading_key: str,
                      load: Callable[[], Awaitable[T]]) -> T:
        """``store``'s fresh entry for ``key``, or ``load``'s answer kept there for the TTL (the store is
        emptied when full)."""
        cached = store.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]

        def keep(value: T) -> None:
            if len(store) >= MAX_ENTRIES:
                store.clear()
            store[key] = (time.monotonic() + self._ttl_s, value)

        return await self._load_once(loading_key, load, keep)

    async def _read(self, query: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """One query's answer, from a session held only while it runs (so no load holds two connections)."""
        async with serving_session(self._sessions) as session:
            return await query(session)

    async def _load_once(self, key: str, load: Callable[[], Awaitable[T]], keep: Callable[[T], None]) -> T:
        """``load`` from the database once for all the callers that want ``key`` meanwhile (a burst of requests
        after the cache expired or was invalidated makes one query, not one each); the result is kept (``keep``)
        unless a change was announced while it loaded."""
        loading = self._loading.get(key)
        if loading is not None:
            return cast(T, await asyncio.shield(loading))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        generation = self._generation
        try:
            value = await load()
            future.set_result(value)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()
            raise
        finally:
            if self._loading.get(key) is future:
                del self._loading[key]
        if generation == self._generation:
            keep(value)
        return value


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'.",
            code="missing_api_key",
        )
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationFailed("The Authorization header must be 'Bearer YOUR_KEY'.", code="invalid_api_key")
    return secret.strip()
