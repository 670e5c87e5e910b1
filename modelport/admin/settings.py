"""The admin app's settings (``MODELPORT_*``), validated once at start."""

from __future__ import annotations

from pydantic import Field, SecretStr

from modelport.settings import CommonSettings


class AdminSettings(CommonSettings):
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8100, ge=0, le=65535)
    # Signs session cookies; set it, or sessions end whenever the admin app restarts.
    admin_secret_key: SecretStr | None = None
    admin_session_max_age_s: int = Field(default=8 * 3600, ge=60)
    # Session cookies are Secure (sent over HTTPS only); `modelport up`, on plain HTTP at 127.0.0.1, turns it off.
    admin_https_only_cookies: bool = True
    # Failed logins allowed per user name and per client address within the window, then refused.
    admin_login_attempts: int = Field(default=5, ge=1)
    admin_login_window_s: int = Field(default=900, ge=1)
    # Where users reach the API, for the curl line on their token page.
    public_api_url: str = "http://127.0.0.1:8000"
    # LDAP (off when the URL is empty): users bind as the DN made from the template; their directory
    # groups (found under the base with the filter) map to ModelPort groups by name.
    ldap_url: str = ""
    ldap_user_dn_template: str = "uid={username},ou=people,dc=example,dc=org"
    ldap_group_base: str = "ou=groups,dc=example,dc=org"
    ldap_group_filter: str = "(member={user_dn})"
    ldap_group_map: dict[str, str] = Field(default_factory=dict)
    ldap_timeout_s: float = Field(default=5.0, gt=0)
    # A service account that may read user entries: only its "no such entry" deactivates a local LDAP user.
    ldap_bind_dn: str = ""
    ldap_bind_password: SecretStr | None = None
