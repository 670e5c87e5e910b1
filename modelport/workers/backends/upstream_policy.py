"""Which environment variables may be read as upstream keys, and which hosts upstream URLs may name: an
operator's choice, checked wherever an LLM's config is accepted (CLI, admin app) and again by the worker
that would act on it, so no admin can make a worker send one of its secrets where they point."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from modelport.protocol.errors import InvalidRequest

SETTINGS_PREFIX = "MODELPORT_"


@dataclass(frozen=True)
class UpstreamPolicy:
    """``key_envs``: names or glob patterns of variables that may hold upstream keys (ModelPort's own
    ``MODELPORT_*`` settings never may); ``hosts``: hosts upstream URLs may name, glob patterns too
    (empty: any host)."""

    key_envs: tuple[str, ...] = ("*_API_KEY",)
    hosts: tuple[str, ...] = ()

    def check(self, config: dict[str, Any]) -> None:
        """Refuse (400 naming the field) a config that reads a variable or names a host not allowed."""
        variable = config.get("api_key_env")
        if variable is not None and not self.key_allowed(str(variable)):
            raise InvalidRequest(
                f"The upstream key variable '{variable}' is not allowed; the operator allows "
                f"{', '.join(self.key_envs) or 'none'} (never {SETTINGS_PREFIX}* settings). "
                "See MODELPORT_UPSTREAM_KEY_ENVS.", param="api_key_env")
        url = config.get("base_url")
        if url is not None and self.hosts:
            host = (urlsplit(str(url)).hostname or "").lower()
            if not any(fnmatchcase(host, pattern.lower()) for pattern in self.hosts):
                raise InvalidRequest(f"The upstream host '{host}' is not allowed; see MODELPORT_UPSTREAM_HOSTS.",
                                     param="base_url")

    def key_allowed(self, variable: str) -> bool:
        return not variable.upper().startswith(SETTINGS_PREFIX) and any(
            fnmatchcase(variable, pattern) for pattern in self.key_envs)
