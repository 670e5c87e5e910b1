"""``create_admin_app(settings)``: starlette-admin views mounted at /admin behind signed, expiring,
same-site sessions; starlette-admin's double-submit CSRF token guards every form post."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette_admin.contrib.sqla import Admin

from modelport.admin import model_views
from modelport.admin.auth import ModelPortAuth
from modelport.admin.dashboard import DashboardView
from modelport.admin.local_time import local_time
from modelport.admin.model_form import RegisterModelView
from modelport.admin.my_presets import MyPresetsView
from modelport.admin.my_usage import MyUsageView
from modelport.admin.playground import PlaygroundView
from modelport.admin.profile import ProfileView
from modelport.admin.services import AdminServices
from modelport.admin.settings import AdminSettings
from modelport.admin.spend import SpendView
from modelport.admin.usage import UsageChartsView
from modelport.admin.views import VIEWS
from modelport.broker.admin import AdminBroker
from modelport.db.engine import create_engine, session_factory


def create_admin_app(settings: AdminSettings) -> Starlette:
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    secret = settings.admin_secret_key.get_secret_value() if settings.admin_secret_key else secrets.token_urlsafe(32)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, AdminServices]]:
        broker = AdminBroker(settings.redis_target())
        try:
            yield {"services": AdminServices(settings, sessions, broker)}
        finally:
            await broker.close()
            await engine.dispose()

    app = Starlette(lifespan=lifespan, middleware=[
        Middleware(SessionMiddleware, secret_key=secret, max_age=settings.admin_session_max_age_s,
                   same_site="strict", https_only=settings.admin_https_only_cookies, session_cookie="modelport"),
    ])
    admin = Admin(engine, title="ModelPort", base_url="/admin", auth_provider=ModelPortAuth(), secret_key=secret,
                  templates_dir=str(Path(__file__).parent / "templates"), index_view=DashboardView())
    admin.templates.env.globals["local_time"] = local_time
    admin.add_view(PlaygroundView())
    admin.add_view(MyUsageView())
    admin.add_view(ProfileView())
    admin.add_view(RegisterModelView())
    admin.add_view(MyPresetsView())
    admin.add_view(UsageChartsView())
    admin.add_view(SpendView())
    for view, model, key, label in [*VIEWS, *model_views.VIEWS]:
        admin.add_view(view(model, key=key, display_name=label, menu_label=label))
    admin.mount_to(app)
    return app
