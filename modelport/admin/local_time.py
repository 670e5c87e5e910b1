"""Timestamps on the admin app's own pages: sent as ``<time>`` in UTC to the second, shown in the viewer's
time zone by ``local_time.js`` (starlette-admin's views convert theirs with its timezone cookie)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from markupsafe import Markup, escape

from modelport.db.tables import as_utc

SCRIPT = Path(__file__).parent / "static" / "local_time.js"


def local_time(moment: datetime | None, empty: str = "never") -> Markup:
    if moment is None:
        return Markup(escape(empty))
    utc = as_utc(moment).replace(microsecond=0)
    return Markup('<time class="local-time" datetime="{}">{} UTC</time>').format(
        utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M:%S"))
