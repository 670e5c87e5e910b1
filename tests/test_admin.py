"""The admin app as people use it over HTTP: local and LDAP login (a real slapd), throttling, admin-only
views by URL, validated model registration, and revocation reaching a live gateway within a second."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text

from modelport.protocol import keys
from tests.ldap_server import READER_DN, READER_PASSWORD, ROOT_DN, ROOT_PASSWORD, SUFFIX, LdapServer
from tests.servers import Process, RedisServer, free_port, running, wait_for_port, wait_healthy
from tests.system import System
from tests.waiting import until

ADMIN_PASSWORD = "correct horse battery"


@dataclass
class Panel:
    system: System
    base: str
    gateway: str
    ldap: LdapServer


@pytest.fixture(scope="module")
def panel(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[Panel]:
    for ldap in running(LdapServer(tmp_path_factory.mktemp("ldap"))):
        system = System(f"sqlite:///{tmp_path_factory.mktemp('admin') / 'db.sqlite'}", redis_server, logs)
        system.cli("user", "add", "root", "--admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
        system.cli("user", "add", "plain", "--password-stdin", stdin="plain-pass\n")
        system.cli("group", "add", "lab", "--permission", "read_api_token")
        system.cli("llm", "add", "quick", "--backend", "fake")
        system.cli("llm", "add", "other", "--backend", "fake")
        system.cli("group", "grant", "lab", "quick")
        base = system.admin(MODELPORT_LDAP_URL=ldap.url,
                           MODELPORT_LDAP_USER_DN_TEMPLATE=f"uid={{username}},ou=people,{SUFFIX}",
                           MODELPORT_LDAP_GROUP_BASE=f"ou=groups,{SUFFIX}",
                           MODELPORT_LDAP_GROUP_MAP='{"researchers": "lab"}', MODELPORT_ADMIN_LOGIN_ATTEMPTS="3",
                           MODELPORT_LDAP_BIND_DN=READER_DN, MODELPORT_LDAP_BIND_PASSWORD=READER_PASSWORD)
        gateway = system.gateway()
        system.workers("quick")
        wait_healthy(gateway)
        yield Panel(system, base, gateway, ldap)
        system.stop()


CLIENTS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    """Each test's admin clients are closed after it."""
    yield
    while CLIENTS:
        CLIENTS.pop().close()


def admin_client(base: str, source: str = "127.0.0.1") -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=10, transport=httpx.HTTPTransport(local_address=source))
    CLIENTS.append(client)
    return client


def logged_in(base: str, user: str, password: str, source: str = "127.0.0.1") -> tuple[httpx.Client, httpx.Response]:
    """A client that logged in (or tried to), connecting from ``source`` (any 127.x.y.z address)."""
    client = admin_client(base, source)
    client.get("/admin/login")
    answer = client.post("/admin/login", data={"username": user, "password": password,
                                                "csrftoken": client.cookies.get("starlette_admin_csrftoken", "")})
    return client, answer


def query(system: System, sql: str) -> list[tuple[object, ...]]:
    engine = create_sync_engine(system.database_url)
    with engine.connect() as connection:
        rows = [tuple(row) for row in connection.execute(text(sql))]
    engine.dispose()
    return rows


def test_local_admin_logs_in_and_sees_the_views(panel: Panel) -> None:
    client, answer = logged_in(panel.base, "root", ADMIN_PASSWORD)
    assert answer.status_code == 303
    page = client.get("/admin/user/list")
    assert page.status_code == 200 and "root" in page.text and "plain" in page.text
    assert "$argon2" not in page.text


def test_non_admins_cannot_reach_admin_views_by_url(panel: Panel) -> None:
    client, answer = logged_in(panel.base, "plain", "plain-pass")
    assert answer.status_code == 303
    for path in ("/admin/user/list", "/admin/token/list", "/admin/llm/create", "/admin/audit/list"):
        assert client.get(path).status_code in (403, 404), path
    anonymous = httpx.get(f"{panel.base}/admin/user/list")
    assert anonymous.status_code == 303 and "/admin/login" in anonymous.headers["location"]


def test_password_guessing_is_throttled(panel: Panel) -> None:
    panel.system.cli("user", "add", "target", "--admin", "--password-stdin", stdin="the-real-one\n")
    for _ in range(3):
        assert logged_in(panel.base, "target", "guess")[1].status_code == 400
    _, refused = logged_in(panel.base, "target", "the-real-one")
    assert refused.status_code == 400 and "Too many failed attempts" in refused.text


def test_ldap_login_creates_the_user_with_mapped_groups(panel: Panel) -> None:
    _, refused = logged_in(panel.base, "alice", "wrong")
    assert refused.status_code == 400 and "Invalid user name or password" in refused.text
    client, answer = logged_in(panel.base, "alice", "alice-pass")
    assert answer.status_code == 303
    [(source, display, email)] = query(panel.system, "SELECT source, display_name, email FROM user WHERE name='alice'")
    assert (source, display, email) == ("LDAP", "Alice Liddell", "alice@example.org")
    groups = query(panel.system, "SELECT g.name FROM membership m JOIN \"group\" g ON g.id = m.group_id "
                                 "JOIN user u ON u.id = m.user_id WHERE u.name = 'alice'")
    assert groups == [("lab",)]
    assert client.get("/admin/user/list").status_code in (403, 404), "LDAP users are not administrators"


def test_users_removed_from_the_directory_are_deactivated_locally_and_back_when_restored(panel: Panel) -> None:
    assert logged_in(panel.base, "bob", "bob-pass")[1].status_code == 303
    token = panel.system.cli("token", "create", "bob").strip().splitlines()[-1]
    assert httpx.get(f"{panel.gateway}/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    ldap = ["-x", "-H", panel.ldap.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD]
    subprocess.run(["ldapdelete", *ldap, f"uid=bob,ou=people,{SUFFIX}"], check=True, capture_output=True)
    assert logged_in(panel.base, "bob", "bob-pass")[1].status_code == 400
    assert query(panel.system, "SELECT active FROM user WHERE name = 'bob'") == [(0,)]
    assert ("ldap", "user.deactivate") in query(panel.system, "SELECT actor, action FROM auditentry")
    refused = httpx.get(f"{panel.gateway}/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401, "the deactivation is announced: no gateway waits for its cache TTL"
    entry = panel.ldap.directory / "bob.ldif"
    entry.write_text(f"dn: uid=bob,ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob\nsn: Builder\n"
                     "userPassword: bob-pass\n")
    subprocess.run(["ldapadd", *ldap, "-f", str(entry)], check=True, capture_output=True)
    assert logged_in(panel.base, "bob", "bob-pass")[1].status_code == 303
    assert query(panel.system, "SELECT active FROM user WHERE name = 'bob'") == [(1,)]


def test_a_wrong_password_never_deactivates_anyone(panel: Panel) -> None:
    """The directory hides entries from anonymous searches (as Active Directory does): a failed bind
    followed by an anonymous search that sees nothing used to deactivate the user for good."""
    assert logged_in(panel.base, "alice", "alice-pass")[1].status_code == 303
    assert logged_in(panel.base, "alice", "not-her-password")[1].status_code == 400
    assert query(panel.system, "SELECT active FROM user WHERE name = 'alice'") == [(1,)]
    assert logged_in(panel.base, "alice", "alice-pass")[1].status_code == 303
    without_service_account = panel.system.admin(MODELPORT_LDAP_URL=panel.ldap.url,
                                          MODELPORT_LDAP_USER_DN_TEMPLATE=f"uid={{username}},ou=people,{SUFFIX}")
    subprocess.run(["ldapdelete", "-x", "-H", panel.ldap.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD,
                    f"uid=alice,ou=people,{SUFFIX}"], check=True, capture_output=True)
    try:
        assert logged_in(without_service_account, "alice", "alice-pass")[1].status_code == 400
        assert query(panel.system, "SELECT active FROM user WHERE name = 'alice'") == [(1,)], \
            "without a service account there is no definite answer, so nobody is deactivated"
    finally:
        restored = panel.ldap.directory / "alice.ldif"
        restored.write_text(f"dn: uid=alice,ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: alice\n"
                            "cn: Alice Liddell\nsn: Liddell\nmail: alice@example.org\nuserPassword: alice-pass\n")
        subprocess.run(["ldapadd", "-x", "-H", panel.ldap.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, "-f",
                        str(restored)], check=True, capture_output=True)
        forget_failed_logins(panel.system)  # as if the throttling window had passed


def forget_failed_logins(system: System) -> None:
    client = redis.Redis.from_url(system.redis_url)
    for key in client.scan_iter(keys.login_failures("*")):
        client.delete(key)
    client.close()


def test_unreachable_directory_is_explained_and_local_accounts_still_work(panel: Panel) -> None:
    base = panel.system.admin(MODELPORT_LDAP_URL=f"ldap://127.0.0.1:{free_port()}",
                       MODELPORT_LDAP_TIMEOUT_S="1")
    _, refused = logged_in(base, "bob", "bob-pass")
    assert refused.status_code == 400 and "unreachable" in refused.text
    assert logged_in(base, "root", ADMIN_PASSWORD)[1].status_code == 303


def test_model_config_is_validated_before_it_is_saved(panel: Panel) -> None:
    client, _ = logged_in(panel.base, "root", ADMIN_PASSWORD)
    form = {"name": "remote", "backend": "openai_compat", "config": json.dumps({"base_url": "http://x/v1"}),
            "enabled": "on", "max_queue": "16", "csrftoken": client.cookies.get("starlette_admin_csrftoken", "")}
    refused = client.post("/admin/llm/create", data=form)
    assert refused.status_code != 303 and "upstream_model" in refused.text
    assert query(panel.system, "SELECT name FROM llm WHERE name='remote'") == []
    form["config"] = json.dumps({"base_url": "http://x/v1", "upstream_model": "m",
                                 "api_key_env": "MODELPORT_DATABASE_URL"})
    refused = client.post("/admin/llm/create", data=form)
    assert refused.status_code != 303 and "MODELPORT_UPSTREAM_KEY_ENVS" in refused.text
    form["config"] = json.dumps({"base_url": "http://x/v1", "upstream_model": "m"})
    assert client.post("/admin/llm/create", data=form).status_code == 303
    assert query(panel.system, "SELECT backend FROM llm WHERE name='remote'") == [("openai_compat",)]
    assert ("root", "llm.create") in query(panel.system, "SELECT actor, action FROM auditentry")


def test_deployments_and_fallbacks_are_validated_before_they_are_saved(panel: Panel) -> None:
    client, _ = logged_in(panel.base, "root", ADMIN_PASSWORD)
    form = {"name": "spread", "kind": "chat", "backend": "fake", "config": "{}", "enabled": "on", "max_queue": "16",
            "deployments": json.dumps({"second": {"backend": "openai_compat", "config": {"base_url": "http://x/v1"}}}),
            "fallbacks": "[]", "csrftoken": client.cookies.get("starlette_admin_csrftoken", "")}
    refused = client.post("/admin/llm/create", data=form)
    assert refused.status_code != 303 and "upstream_model" in refused.text
    form["deployments"] = json.dumps({"second": {"backend": "fake", "config": {"reply": "from b"}}})
    form["fallbacks"] = json.dumps(["no-such-llm"])
    refused = client.post("/admin/llm/create", data=form)
    assert refused.status_code != 303 and "no-such-llm" in refused.text
    form["fallbacks"] = json.dumps(["quick"])
    assert client.post("/admin/llm/create", data=form).status_code == 303
    [(deployments, fallbacks)] = query(panel.system, "SELECT deployments, fallbacks FROM llm WHERE name='spread'")
    assert json.loads(str(deployments))["second"]["config"]["reply"] == "from b"
    assert json.loads(str(fallbacks)) == ["quick"]


def test_editing_a_model_in_the_admin_reaches_its_running_workers(panel: Panel) -> None:
    token = panel.system.user_with_token("quick", user="config-watcher")

    def reply() -> str:
        answer = httpx.post(f"{panel.gateway}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                            json={"model": "quick", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["choices"][0]["message"]["content"])

    assert reply() != "edited in the admin"
    [(llm_id,)] = query(panel.system, "SELECT id FROM llm WHERE name = 'quick'")
    client, _ = logged_in(panel.base, "root", ADMIN_PASSWORD)
    edited = client.post("/admin/llm/edit", params={"pk": str(llm_id)}, data={
        "name": "quick", "kind": "chat", "backend": "fake", "config": json.dumps({"reply": "edited in the admin"}),
        "enabled": "on",
        "max_queue": "256", "csrftoken": client.cookies.get("starlette_admin_csrftoken", "")})
    assert edited.status_code == 303, edited.text
    deadline = time.monotonic() + 2
    while reply() != "edited in the admin":
        assert time.monotonic() < deadline, "the running worker kept the old config"
        time.sleep(0.1)


def test_a_preset_made_and_edited_in_the_admin_takes_effect_on_the_next_request(panel: Panel) -> None:
    token = panel.system.user_with_token("quick", user="bot-user")

    def reply() -> str:
        answer = httpx.post(f"{panel.gateway}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                            json={"model": "admin-bot", "messages": [{"role": "user", "content": "hi"}]})
        return str(answer.json()["choices"][0]["message"]["content"]) if answer.status_code == 200 else ""

    [(llm_id,)] = query(panel.system, "SELECT id FROM llm WHERE name = 'quick'")
    [(user_id,)] = query(panel.system, "SELECT id FROM user WHERE name = 'bot-user'")
    client, _ = logged_in(panel.base, "root", ADMIN_PASSWORD)
    form = {"name": "admin-bot", "llm": str(llm_id), "system_prompt": "Be brief.", "client_system": "on",
            "temperature": "5", "max_tokens": "2", "stop": "[]", "visibility": "private", "owner": str(user_id),
            "enabled": "on", "csrftoken": client.cookies.get("starlette_admin_csrftoken", "")}
    refused = client.post("/admin/preset/create", data=form)
    assert refused.status_code != 303 and "less than or equal to 2" in refused.text
    form["temperature"], form["visibility"] = "", "group"
    refused = client.post("/admin/preset/create", data=form)
    assert refused.status_code != 303 and "names its group" in refused.text
    form["visibility"], form["name"] = "private", "quick"
    assert client.post("/admin/preset/create", data=form).status_code != 303, "the name is the LLM's"
    form["name"] = "admin-bot"
    assert client.post("/admin/preset/create", data=form).status_code == 303
    until(lambda: len(reply().split()) == 2, "the new preset answers, cut at its max_tokens")
    [(preset_id,)] = query(panel.system, "SELECT id FROM preset WHERE name = 'admin-bot'")
    form["max_tokens"] = "3"
    assert client.post("/admin/preset/edit", params={"pk": str(preset_id)}, data=form).status_code == 303
    until(lambda: len(reply().split()) == 3, "the edited preset takes effect")
    assert ("root", "preset.edit") in query(panel.system, "SELECT actor, action FROM auditentry")


def test_a_user_with_the_permission_makes_and_removes_private_presets_in_my_presets(panel: Panel) -> None:
    system = panel.system
    system.cli("group", "add", "preset-makers", "--permission", "create_preset", "--permission", "read_api_token")
    system.cli("group", "grant", "preset-makers", "quick")
    for name in ("maker", "bystander"):
        system.cli("user", "add", name, "--password-stdin", stdin=f"{name}-pass\n")
    system.cli("user", "join", "maker", "preset-makers")
    token = system.cli("token", "create", "maker").strip().splitlines()[-1]
    maker, _ = logged_in(panel.base, "maker", "maker-pass")
    csrf = {"csrftoken": maker.cookies.get("starlette_admin_csrftoken", "")}
    form = {"name": "makers-tutor", "llm": "quick", "system_prompt": "Be brief.", "max_tokens": "2", **csrf}
    refused = maker.post("/admin/my-presets/presets", data={**form, "llm": "other"})
    assert refused.status_code == 400 and "may not use" in refused.text, "not one of the maker's LLMs"
    assert maker.post("/admin/my-presets/presets", data={**form, "temperature": "9"}).status_code == 400
    assert maker.post("/admin/my-presets/presets", data=form).status_code == 303
    assert "makers-tutor" in maker.get("/admin/my-presets").text

    def answer() -> httpx.Response:
        return httpx.post(f"{panel.gateway}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                          json={"model": "makers-tutor", "messages": [{"role": "user", "content": "hi"}]})

    until(lambda: answer().status_code == 200, "the new preset answers")
    assert len(answer().json()["choices"][0]["message"]["content"].split()) == 2
    [(preset_id,)] = query(system, "SELECT id FROM preset WHERE name = 'makers-tutor'")
    bystander, _ = logged_in(panel.base, "bystander", "bystander-pass")
    bystander_csrf = {"csrftoken": bystander.cookies.get("starlette_admin_csrftoken", "")}
    assert bystander.post("/admin/my-presets/presets", data={**form, **bystander_csrf}).status_code == 403
    assert bystander.post(f"/admin/my-presets/presets/{preset_id}/remove", data=bystander_csrf).status_code == 404
    assert maker.post(f"/admin/my-presets/presets/{preset_id}/remove", data=csrf).status_code == 303
    until(lambda: answer().status_code == 404, "the removed preset is gone")


def test_a_hand_made_form_the_database_refuses_is_a_form_error_not_a_500(panel: Panel) -> None:
    client, _ = logged_in(panel.base, "root", ADMIN_PASSWORD)
    csrf = {"csrftoken": client.cookies.get("starlette_admin_csrftoken", "")}
    [(group_id,)] = query(panel.system, "SELECT id FROM \"group\" WHERE name = 'lab'")
    without_description = client.post("/admin/group/edit", params={"pk": str(group_id)},
                                      data={"name": "lab", "priority": "0", "permissions": "[]", **csrf})
    assert without_description.status_code == 422 and "description" in without_description.text
    duplicate = client.post("/admin/group/create", data={"name": "lab", "description": "", "priority": "0",
                                                         "permissions": "[]", **csrf})
    assert duplicate.status_code == 422
    assert query(panel.system, "SELECT description FROM \"group\" WHERE name = 'lab'") == [("",)]


def test_revoking_in_the_admin_reaches_the_gateway_within_a_second(panel: Panel) -> None:
    token = panel.system.user_with_token("quick", user="holder")
    ask = {"model": "quick", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{panel.gateway}/v1/chat/completions", json=ask,
                      headers={"Authorization": f"Bearer {token}"}).status_code == 200
    [(token_id,)] = query(panel.system, f"SELECT id FROM apitoken WHERE prefix = '{token[:12]}'")
    client, _ = logged_in(panel.base, "root", ADMIN_PASSWORD)
    revoked = client.post("/admin/_api/token/action", params={"name": "revoke", "pks": str(token_id)},
                          headers={"X-CSRFToken": client.cookies.get("starlette_admin_csrftoken") or ""})
    revoked_at = time.monotonic()
    assert revoked.status_code == 200, revoked.text
    status = 200
    while status != 401 and time.monotonic() - revoked_at < 1.0:
        status = httpx.post(f"{panel.gateway}/v1/chat/completions", json=ask,
                            headers={"Authorization": f"Bearer {token}"}).status_code
    assert status == 401
    assert ("root", "token.revoke") in query(panel.system, "SELECT actor, action FROM auditentry")


def test_a_directory_user_creates_a_token_that_works_for_exactly_the_granted_model(panel: Panel) -> None:
    client, _ = logged_in(panel.base, "alice", "alice-pass")
    page = client.post("/admin/profile/tokens", data={"name": "laptop",
                                                      "csrftoken": client.cookies.get("starlette_admin_csrftoken")})
    [secret] = re.findall(r'id="new-token-secret"[^>]*>([^<]+)<', page.text)
    assert f"Bearer {secret}" in page.text and "<code>quick</code>" in page.text
    headers = {"Authorization": f"Bearer {secret}"}
    models = httpx.get(f"{panel.gateway}/v1/models", headers=headers).json()["data"]
    assert [model["id"] for model in models] == ["quick"]
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{panel.gateway}/v1/chat/completions", json={"model": "quick", **ask},
                      headers=headers).status_code == 200
    assert httpx.post(f"{panel.gateway}/v1/chat/completions", json={"model": "other", **ask},
                      headers=headers).status_code == 403
    listed = client.get("/admin/profile").text
    assert secret not in listed and secret[:12] in listed


def test_users_without_the_token_permission_cannot_create_tokens(panel: Panel) -> None:
    client, _ = logged_in(panel.base, "plain", "plain-pass")
    refused = client.post("/admin/profile/tokens", data={"name": "x",
                                                         "csrftoken": client.cookies.get("starlette_admin_csrftoken")})
    assert refused.status_code == 403 and "new-token-secret" not in refused.text


def test_the_whole_flow_in_a_real_browser(panel: Panel) -> None:
    from playwright.sync_api import Page, sync_playwright

    docs = Path(__file__).resolve().parent.parent / "docs"
    docs.mkdir(exist_ok=True)

    def submit_form(page: Page, path: str, fields: dict[str, str], checked: tuple[str, ...] = (),
                    picked: dict[str, str] | None = None) -> None:
        """Fill a create form: typed fields, ticked boxes, and rows of other views picked by name from
        the search box of a relation field, as an administrator would."""
        page.goto(f"{panel.base}{path}")
        for name, value in fields.items():
            page.locator(f"[name='{name}']").first.evaluate("(element, value) => element.value = value", value)
        for name in checked:
            page.locator(f"[name='{name}']").first.check(force=True)
        for name, value in (picked or {}).items():
            page.locator(f"select#{name} + .select2 .select2-selection").click()
            page.locator(".select2-search__field").fill(value)
            page.get_by_role("option", name=value, exact=True).click()
        page.locator("button.btn-primary[type=submit]").click()
        page.wait_for_load_state()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        admin = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        admin.goto(f"{panel.base}/admin/login")
        admin.fill("[name=username]", "root")
        admin.fill("[name=password]", ADMIN_PASSWORD)
        admin.locator("[type=submit]").click()
        admin.wait_for_url(lambda url: "/login" not in url)
        submit_form(admin, "/admin/group/create", {"name": "browser-group", "priority": "0"})
        submit_form(admin, "/admin/llm/create", {"name": "browser-model", "backend": "fake", "config": "{}",
                                                 "max_queue": "16"}, checked=("enabled",))
        submit_form(admin, "/admin/grant/create", {}, picked={"group": "lab", "llm": "browser-model"})
        submit_form(admin, "/admin/user/create", {"name": "carol", "display_name": "Carol",
                                                  "password_hash": "carol-pass", "source": "local"},
                    checked=("active",))
        submit_form(admin, "/admin/membership/create", {}, picked={"user": "carol", "group": "browser-group"})
        admin.goto(f"{panel.base}/admin/membership/list")
        admin.screenshot(path=str(docs / "admin-memberships.png"))
        assert query(panel.system, "SELECT g.name FROM membership m JOIN \"group\" g ON g.id = m.group_id "
                                   "JOIN user u ON u.id = m.user_id WHERE u.name = 'carol'") == [("browser-group",)]
        assert query(panel.system, "SELECT action, target FROM auditentry WHERE action IN "
                                   "('grant.create', 'membership.create') ORDER BY id") == [
            ("grant.create", "lab may use browser-model"), ("membership.create", "carol in browser-group")]
        admin.goto(f"{panel.base}/admin/user/list")
        admin.screenshot(path=str(docs / "admin-users.png"))
        admin.goto(f"{panel.base}/admin/llm/list")
        admin.screenshot(path=str(docs / "admin-models.png"))
        assert query(panel.system, "SELECT name FROM user WHERE name = 'carol'") == [("carol",)]
        panel.system.workers("browser-model")

        user = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        user.goto(f"{panel.base}/admin/login")
        user.fill("[name=username]", "alice")
        user.fill("[name=password]", "alice-pass")
        user.locator("[type=submit]").click()
        user.wait_for_url(lambda url: "/login" not in url)
        user.goto(f"{panel.base}/admin/profile")
        user.fill("[name=name]", "browser")
        user.locator("#create-token").click()
        secret = user.locator("#new-token-secret").inner_text().strip()
        user.screenshot(path=str(docs / "profile-new-token.png"))
        headers = {"Authorization": f"Bearer {secret}"}
        models = {model["id"] for model in httpx.get(f"{panel.gateway}/v1/models", headers=headers).json()["data"]}
        assert models == {"quick", "browser-model"}
        answer = httpx.post(f"{panel.gateway}/v1/chat/completions", headers=headers,
                            json={"model": "browser-model", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
        user.goto(f"{panel.base}/admin/profile")
        user.locator("#tokens form button").first.click()
        user.wait_for_load_state()
        revoked_at = time.monotonic()
        status = 200
        while status != 401 and time.monotonic() - revoked_at < 1.0:
            status = httpx.post(f"{panel.gateway}/v1/chat/completions", headers=headers,
                                json={"model": "quick", "messages": [{"role": "user", "content": "hi"}]}).status_code
        assert status == 401
        until(lambda: query(panel.system, "SELECT count(*) FROM usagerecord WHERE model = 'browser-model'")[0][0],
              "the gateway wrote the usage (in batches, once a second)")
        admin.goto(f"{panel.base}/admin/usage")
        admin.wait_for_timeout(300)
        admin.screenshot(path=str(docs / "admin-usage.png"), full_page=True)
        assert admin.locator("canvas").count() == 6
        assert "(0 requests)" not in admin.content()
        export = admin.request.get(f"{panel.base}/admin/usage/export.csv")
        assert export.ok and "browser-model,chat,200" in export.text()
        browser.close()


def test_editing_a_user_never_shows_or_reuses_the_password_hash(panel: Panel) -> None:
    panel.system.cli("user", "add", "dave", "--password-stdin", stdin="dave-pass\n")
    [(user_id,)] = query(panel.system, "SELECT id FROM user WHERE name = 'dave'")
    client, _ = logged_in(panel.base, "root", ADMIN_PASSWORD)
    page = client.get("/admin/user/edit", params={"pk": str(user_id)})
    assert page.status_code == 200 and "$argon2" not in page.text
    csrf = client.cookies.get("starlette_admin_csrftoken", "")
    form = {"name": "dave", "display_name": "Dave", "email": "", "password_hash": "", "source": "local",
            "active": "on", "csrftoken": csrf}
    assert client.post("/admin/user/edit", params={"pk": str(user_id)}, data=form).status_code == 303
    dave, answer = logged_in(panel.base, "dave", "dave-pass")
    assert answer.status_code == 303, "an edit that leaves the password empty keeps it"
    assert dave.get("/admin/profile").status_code == 200
    form["password_hash"] = "dave-new-pass"
    assert client.post("/admin/user/edit", params={"pk": str(user_id)}, data=form).status_code == 303
    assert dave.get("/admin/profile").status_code == 303, "a password change ends the user's sessions"
    assert logged_in(panel.base, "dave", "dave-new-pass")[1].status_code == 303


def test_history_cannot_be_imported_and_changes_are_announced_after_they_commit(panel: Panel) -> None:
    client, _ = logged_in(panel.base, "root", ADMIN_PASSWORD)
    csrf = {"X-CSRFToken": client.cookies.get("starlette_admin_csrftoken") or ""}
    audit_rows = len(query(panel.system, "SELECT id FROM auditentry"))
    for view in ("audit", "usage", "user", "token"):
        imported = client.post(f"/admin/_api/{view}/import", headers=csrf, data={"format": "csv"},
                               files={"file": ("rows.csv", b"actor,action,target\nnobody,rewrite,history\n")})
        assert imported.status_code == 403, view
    assert len(query(panel.system, "SELECT id FROM auditentry")) == audit_rows
    token = panel.system.user_with_token("quick", user="deleted-holder")
    ask = {"model": "quick", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{panel.gateway}/v1/chat/completions", json=ask, headers=headers).status_code == 200
    [(token_id,)] = query(panel.system, f"SELECT id FROM apitoken WHERE prefix = '{token[:12]}'")
    deleted = client.post("/admin/_api/token/action", params={"name": "delete", "pks": str(token_id)},
                          headers=csrf)
    assert deleted.status_code == 200, deleted.text
    deleted_at = time.monotonic()
    status = 200
    while status != 401 and time.monotonic() - deleted_at < 1.0:
        status = httpx.post(f"{panel.gateway}/v1/chat/completions", json=ask, headers=headers).status_code
    assert status == 401, "the gateway reloaded after the delete committed, not before"


def test_login_throttling_counts_every_attempt_whatever_the_case_of_the_name(panel: Panel) -> None:
    panel.system.cli("user", "add", "erin", "--password-stdin", stdin="erin-pass\n")
    guesses = [threading.Thread(target=logged_in, args=(panel.base, name, "guess", "127.0.0.2"))
               for name in ("erin", "Erin", "ERIN", " erin", "erIn", "eRin")]
    for guess in guesses:
        guess.start()
    for guess in guesses:
        guess.join()
    _, refused = logged_in(panel.base, "erin", "erin-pass", "127.0.0.2")
    assert refused.status_code == 400 and "Too many failed attempts" in refused.text


def test_session_cookies_are_secure_by_default(panel: Panel) -> None:
    env = {key: value for key, value in panel.system.env.items()}
    port = free_port()
    panel.system.processes.append(Process(["modelport", "admin", "--port", str(port)], env,
                                          Path(panel.system.logs) / f"admin-{port}.log"))
    base = f"http://127.0.0.1:{port}"
    wait_for_port(port)
    client = admin_client(base)
    client.get("/admin/login")
    answer = client.post("/admin/login", data={"username": "root", "password": ADMIN_PASSWORD,
                                                "csrftoken": client.cookies.get("starlette_admin_csrftoken", "")})
    cookie = next(value for name, value in answer.headers.multi_items()
                  if name == "set-cookie" and value.startswith("modelport="))
    assert "secure" in cookie.lower() and "samesite=strict" in cookie.lower()
