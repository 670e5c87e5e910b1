"""The playground, for every signed-in user: chat with one or several of their models side by side, streamed
from the public API through the same auth, limits and usage as any client. The browser calls the API with a
short-lived token of the session (minted here, revoked when the session signs out), never a stored one."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette_admin import CustomView
from starlette_admin.routing import route

from modelport.admin.services import AdminServices
from modelport.db import directory, queries
from modelport.db.tables import User, utcnow
from modelport.protocol.errors import NotFound

SCRIPT = Path(__file__).parent / "static" / "playground.js"
TOKEN_NAME = "playground"
TOKEN_LIFETIME = timedelta(hours=1)
REUSE_MARGIN_S = 300  # a session token with less life left than this is replaced
SESSION_KEY = "playground"


class PlaygroundView(CustomView):
    menu_label = "Playground"
    icon = "fa fa-comments"
    path = "/playground"
    route_name = "playground"

    @route("")
    async def index(self, request: Request) -> Response:
        services: AdminServices = request.state.services
        user: User = request.state.user
        async with services.sessions() as session:  # the models one may chat with (not embedding models)
            catalog = await queries.enabled_models(session)
            models = sorted(name for name in await queries.permitted_models(session, user.id or 0)
                            if name in catalog and catalog[name].kind == "chat")
        context: dict[str, Any] = {"title": "Playground", "models": models, "csrf": request.state.csrf_token,
                                   "api_url": services.settings.public_api_url.rstrip("/"),
                                   "base": str(request.scope.get("root_path", "")) + self.path}
        assert self.templates is not None
        return self.templates.TemplateResponse(request=request, name="playground.html", context=context)

    @route("/playground.js")
    async def script(self, request: Request) -> Response:
        return FileResponse(SCRIPT, media_type="text/javascript")

    @route("/token", methods=["POST"])
    async def token(self, request: Request) -> Response:
        """The session's API token (``{"token", "expires_at"}``): the current one while it has five minutes
        left, else a new one for an hour (the old one revoked). Only the page can ask: starlette-admin's CSRF
        check wants the X-CSRFToken header the page sends."""
        held: dict[str, Any] = request.session.get(SESSION_KEY) or {}
        if held and float(held.get("expires", 0)) - utcnow().timestamp() > REUSE_MARGIN_S:
            return _token_response(held)
        services: AdminServices = request.state.services
        user: User = request.state.user
        expires = utcnow() + TOKEN_LIFETIME
        async with services.sessions() as session:
            if held.get("prefix"):
                with contextlib.suppress(NotFound):
                    await directory.revoke_token(session, user.name, str(held["prefix"]), exact=True)
            token = await directory.create_token(session, user.name, user.name, name=TOKEN_NAME, expires_at=expires)
        await services.announce("token.create")
        held = {"prefix": token.prefix, "secret": token.secret, "expires": expires.timestamp()}
        request.session[SESSION_KEY] = held
        return _token_response(held)


def _token_response(held: dict[str, Any]) -> Response:
    return JSONResponse({"token": held["secret"], "expires_at": held["expires"]},
                        headers={"cache-control": "no-store"})


async def end_session_token(request: Request) -> None:
    """Signing out revokes the session's playground token (it would expire within the hour anyway)."""
    held: dict[str, Any] = request.session.get(SESSION_KEY) or {}
    if not held.get("prefix"):
        return
    services: AdminServices = request.state.services
    async with services.sessions() as session:
        with contextlib.suppress(NotFound):
            await directory.revoke_token(session, str(request.session.get("user", "?")), str(held["prefix"]),
                                         exact=True)
    await services.announce("token.revoke")
