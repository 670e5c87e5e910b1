"""How an LLM is served: its further deployments and its fallbacks, and its removal; each change audited."""

from __future__ import annotations

import re
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.db.directory import audit, one
from modelport.db.tables import LLM
from modelport.protocol.errors import InvalidRequest
from modelport.protocol.registrations import DEFAULT_DEPLOYMENT

MAX_FALLBACKS = 4
MAX_DEPLOYMENTS = 16
DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


async def remove_llm(session: AsyncSession, actor: str, name: str) -> None:
    """Unregister an LLM; its grants, aliases and presets go with it, and other LLMs stop falling back to it.
    Its workers serve on until stopped (they find it gone from the registrations)."""
    llm: LLM = await one(session, LLM, name)
    for other in (await session.exec(select(LLM))).all():
        if name in other.fallbacks:
            other.fallbacks = [fallback for fallback in other.fallbacks if fallback != name]
            session.add(other)
    await session.delete(llm)
    audit(session, actor, "llm.remove", name)
    await session.commit()


async def add_deployment(session: AsyncSession, actor: str, llm_name: str, name: str, backend: str,
                         config: dict[str, Any]) -> LLM:
    """One more deployment of an LLM (``config`` already validated for ``backend``): its workers take jobs
    from the LLM's one queue. Giving an existing name replaces that deployment."""
    llm: LLM = await one(session, LLM, llm_name)
    check_deployment_name(name)
    if name not in llm.deployments and len(llm.deployments) >= MAX_DEPLOYMENTS:
        raise InvalidRequest(f"An LLM has at most {MAX_DEPLOYMENTS} more deployments.", param="name")
    llm.deployments = {**llm.deployments, name: {**llm.deployments.get(name, {}), "backend": backend,
                                                 "config": config}}
    session.add(llm)
    audit(session, actor, "llm.deploy", llm_name, deployment=name, backend=backend)
    await session.commit()
    return llm


def checked_price(price: Any) -> dict[str, float]:
    """A deployment's own prices: ``{"input": X, "output": Y}`` per million tokens, neither negative."""
    if not isinstance(price, dict) or set(price) - {"input", "output"}:
        raise InvalidRequest('A deployment\'s price is {"input": X, "output": Y} (per million tokens).',
                             param="deployments")
    checked = {key: float(price.get(key, 0)) for key in ("input", "output")}
    if min(checked.values()) < 0:
        raise InvalidRequest("A deployment's prices are zero or more.", param="deployments")
    return checked


def check_deployment_name(name: str) -> None:
    if not DEPLOYMENT_NAME.match(name) or name == DEFAULT_DEPLOYMENT:
        raise InvalidRequest("Deployment names use letters, digits, _ and - (at most 64), and 'default' is the "
                             "LLM's own.", param="deployments")


async def check_fallbacks(session: AsyncSession, name: str, fallbacks: list[str]) -> None:
    """At most four other registered LLMs, each once."""
    if (len(fallbacks) > MAX_FALLBACKS or len(set(fallbacks)) != len(fallbacks) or name in fallbacks
            or not all(isinstance(fallback, str) for fallback in fallbacks)):
        raise InvalidRequest(f"Fallbacks are at most {MAX_FALLBACKS} other LLMs, each once.", param="fallbacks")
    for fallback in fallbacks:
        if (await session.exec(select(LLM.id).where(LLM.name == fallback))).first() is None:
            raise InvalidRequest(f"No llm named '{fallback}'.", param="fallbacks")

