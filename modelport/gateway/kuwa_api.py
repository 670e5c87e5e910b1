"""Kuwa's user API over ModelPort's models and presets (what its client's ``ModelOperations`` and
``BotOperations`` call), with the permissions of the admin app; Kuwa's rooms and files belong to its chat
application, not to a gateway: a clear 404."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from modelport.db import admin_reads, queries, virtual_models
from modelport.db.engine import serving_session
from modelport.db.tables import Preset, PresetVisibility
from modelport.gateway.chat import read_body
from modelport.gateway.json_response import FastJSONResponse
from modelport.gateway.state import GatewayState
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.errors import NotFound, PermissionDenied
from modelport.protocol.openai_wire import parse_body
from modelport.protocol.presets import KuwaBotRequest, parse_botfile

log = logging.getLogger(__name__)

KUWA_PRIVATE = 3
KUWA_VISIBILITY = {PresetVisibility.GROUP: 2, PresetVisibility.PRIVATE: KUWA_PRIVATE}


async def read_models(request: Request) -> Response:
    """``GET /api/user/read/models``: the LLMs and aliases the token may use."""
    state: GatewayState = request.state.gateway
    principal = await state.auth.principal(request.headers.get("authorization"))
    catalog = await state.auth.catalog()
    names = sorted(name for name, entry in catalog.items() if entry.preset is None and name in principal.models)
    return _success([{"id": order, "name": name, "access_code": name, "order": order, "enabled": True,
                      "description": "", "created_at": _timestamp(catalog[name].created)}
                     for order, name in enumerate(names, start=1)])


async def read_bots(request: Request) -> Response:
    """``GET /api/user/read/bots``: the presets the token may use."""
    state: GatewayState = request.state.gateway
    principal = await state.auth.principal(request.headers.get("authorization"))
    catalog = await state.auth.catalog()
    names = [name for name, entry in catalog.items() if entry.preset is not None and name in principal.models]
    async with serving_session(state.sessions) as session:
        presets = await queries.presets_named(session, names)
    return _success([_bot(preset, llm) for preset, llm in presets])


async def create_bot(request: Request) -> Response:
    """``POST /api/user/create/bot``: a private preset of an LLM the caller may use, for members of a group
    holding the ``create_preset`` permission; its botfile is Kuwa's ``modelfile``."""
    state: GatewayState = request.state.gateway
    principal = await state.auth.principal(request.headers.get("authorization"))
    bot = parse_body(KuwaBotRequest, await read_body(request, state.settings))
    if bot.visibility != KUWA_PRIVATE:
        raise PermissionDenied("Only private bots (visibility 3) are created through this API; an administrator "
                               "creates the others in the admin app.", param="visibility")
    entry = await state.auth.permitted_model(principal, bot.llm_access_code)
    if entry.preset is not None or entry.llm not in principal.models:
        raise PermissionDenied(f"A bot is made from an LLM you may use; '{bot.llm_access_code}' is not one.",
                               param="llm_access_code")
    settings = parse_botfile(bot.modelfile or "")
    async with serving_session(state.sessions) as session:
        if virtual_models.CREATE_PRESET not in await admin_reads.group_permissions(session, principal.user_id):
            raise PermissionDenied(f"Creating bots needs the '{virtual_models.CREATE_PRESET}' permission in one of "
                                   "your groups.")
        preset = await virtual_models.add_preset(
            session, principal.user_name, bot.bot_name, entry.llm, settings, visibility=PresetVisibility.PRIVATE,
            owner_name=principal.user_name, description=bot.bot_describe or "")
    try:
        await state.broker.announce_change()
    except QUEUE_ERRORS:
        log.warning("could not announce the new preset; gateways will see it within their cache TTL")
    return FastJSONResponse({"status": "success", "last_bot_id": preset.id})


async def not_here(request: Request) -> Response:
    """Every other ``/api/user/...`` call (rooms, files, base models): Kuwa's chat application's, not ours."""
    raise NotFound(f"{request.url.path} is part of Kuwa's chat application (rooms, files); ModelPort serves "
                   "models and bots only: /api/user/read/models, /api/user/read/bots, /api/user/create/bot.",
                   code="unknown_url")


def _bot(preset: Preset, llm: str) -> dict[str, Any]:
    visibility = KUWA_VISIBILITY.get(preset.visibility, 0 if preset.owner_id is None else 1)
    return {"id": preset.id, "name": preset.name, "access_code": f".bot/{preset.name}", "llm_name": llm,
            "description": preset.description, "visibility": visibility, "owner_id": preset.owner_id,
            "group_id": preset.group_id, "enabled": preset.enabled, "type": "prompt", "image": None,
            "created_at": _timestamp(queries.epoch_seconds(preset.created_at)), "config": {}}


def _timestamp(created: int) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")


def _success(result: list[dict[str, Any]]) -> Response:
    return FastJSONResponse({"status": "success", "result": result})
