"""Every change to aliases and presets (the names a request may use besides an LLM's), each audited."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.db.directory import audit, one, require_new_model_name
from modelport.db.tables import LLM, Group, ModelAlias, Preset, PresetVisibility, User
from modelport.protocol.errors import InvalidRequest
from modelport.protocol.presets import PresetSettings

CREATE_PRESET = "create_preset"  # the group permission that lets members create presets of their own
MAX_PRESETS_PER_OWNER = 100  # each gateway keeps every preset in memory: a user cannot grow that alone


async def add_alias(session: AsyncSession, actor: str, name: str, llm_name: str) -> ModelAlias:
    llm: LLM = await one(session, LLM, llm_name)
    await require_new_model_name(session, name)
    assert llm.id is not None
    alias = ModelAlias(name=name, llm_id=llm.id)
    session.add(alias)
    audit(session, actor, "alias.add", name, llm=llm_name)
    await session.commit()
    return alias


async def add_preset(session: AsyncSession, actor: str, name: str, llm_name: str, settings: PresetSettings, *,
                     visibility: PresetVisibility = PresetVisibility.PUBLIC, group_name: str | None = None,
                     owner_name: str | None = None, description: str = "") -> Preset:
    """A preset of an LLM: public (everyone who may use the LLM), a group's (``group_name``) or private to
    its owner; its owner (none: administrators only) manages it."""
    llm: LLM = await one(session, LLM, llm_name)
    await require_new_model_name(session, name)
    check_visibility(visibility, group=group_name is not None, owner=owner_name is not None)
    if len(description) > 1024:
        raise InvalidRequest("A preset's description has at most 1024 characters.", param="description")
    group: Group | None = await one(session, Group, group_name) if group_name is not None else None
    owner: User | None = await one(session, User, owner_name) if owner_name is not None else None
    if owner is not None:
        owned = (await session.exec(select(func.count()).select_from(Preset).where(col(Preset.owner_id) == owner.id)
                                    )).one()
        if owned >= MAX_PRESETS_PER_OWNER:
            raise InvalidRequest(f"'{owner.name}' already owns {owned} presets, the most one user may own; remove "
                                 "one first.", param="owner")
    assert llm.id is not None
    preset = Preset(name=name, llm_id=llm.id, description=description, visibility=visibility,
                    group_id=group.id if group else None, owner_id=owner.id if owner else None,
                    **settings.model_dump())
    session.add(preset)
    audit(session, actor, "preset.add", name, llm=llm_name, visibility=visibility.value)
    await session.commit()
    return preset


def check_visibility(visibility: str, *, group: bool, owner: bool) -> None:
    """A group's preset names its group (and only it does); a private one has an owner."""
    if (visibility == PresetVisibility.GROUP) != group:
        raise InvalidRequest("A group's preset names its group, and only it does.", param="group")
    if visibility == PresetVisibility.PRIVATE and not owner:
        raise InvalidRequest("A private preset needs an owner.", param="owner")


async def remove_preset(session: AsyncSession, actor: str, name: str) -> None:
    preset: Preset = await one(session, Preset, name)
    await session.delete(preset)
    audit(session, actor, "preset.remove", name)
    await session.commit()
