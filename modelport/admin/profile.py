"""Every signed-in user's own page: their API tokens (created and shown once, listed by prefix,
revoked), the models they may use, and the exact curl line for a token."""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette_admin import CustomView
from starlette_admin.routing import route

from modelport.admin.services import AdminServices
from modelport.db import admin_reads, directory, queries
from modelport.db.tables import User, as_utc, utcnow

TOKEN_PERMISSION = "read_api_token"
MAX_ROW_ID = 2**63


async def may_hold_tokens(session: AsyncSession, user: User) -> bool:
    """Administrators, and members of a group holding the ``read_api_token`` permission."""
    return await admin_reads.may(session, user, TOKEN_PERMISSION)


class ProfileView(CustomView):
    menu_label = "My tokens"
    icon = "fa fa-key"
    path = "/profile"
    route_name = "profile"

    @route("")
    async def index(self, request: Request) -> Response:
        return await self._page(request, None)

    @route("/tokens", methods=["POST"])
    async def create_token(self, request: Request) -> Response:
        services: AdminServices = request.state.services
        user: User = request.state.user
        name = str((await request.form()).get("name", ""))[:128]
        async with services.sessions() as session:
            if not await may_hold_tokens(session, user):
                return await self._page(request, None, status_code=403)
            token = await directory.create_token(session, user.name, user.name, name=name)
        await services.announce("token.create")
        return await self._page(request, token.secret)

    @route("/tokens/{token_id:int}/revoke", methods=["POST"])
    async def revoke_token(self, request: Request) -> Response:
        services: AdminServices = request.state.services
        token_id: int = request.path_params["token_id"]
        if not 0 < token_id < MAX_ROW_ID:  # beyond any row id, and beyond what the database can compare
            return await self._page(request, None, status_code=404)
        async with services.sessions() as session:
            token = await admin_reads.token(session, token_id)
            if token is None or token.user_id != request.state.user.id:
                return await self._page(request, None, status_code=404)
            await directory.revoke_token(session, request.state.user.name, token.prefix, exact=True)
        await services.announce("token.revoke")
        return RedirectResponse(self._url(request), status_code=303)

    def _url(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")) + self.path

    async def _page(self, request: Request, new_secret: str | None, status_code: int = 200) -> Response:
        services: AdminServices = request.state.services
        user: User = request.state.user
        async with services.sessions() as session:
            tokens = await admin_reads.tokens_of(session, user.id or 0)
            models = sorted(await queries.permitted_models(session, user.id or 0))
            allowed = await may_hold_tokens(session, user)
        context: dict[str, Any] = {
            "title": "My tokens", "user": user, "tokens": tokens, "models": models, "allowed": allowed,
            "new_secret": new_secret, "api_url": services.settings.public_api_url.rstrip("/"),
            "example_model": models[0] if models else "MODEL", "profile_url": self._url(request),
            "base": str(request.scope.get("root_path", "")), "now": utcnow(), "as_utc": as_utc,
        }
        assert self.templates is not None
        return self.templates.TemplateResponse(request=request, name="profile.html", context=context,
                                               status_code=status_code)
