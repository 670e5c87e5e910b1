"""The admin app's own pages: the playground streaming from the bundled model through the public API with the
session's short-lived token (stopped mid-answer, and its worker stops), "My usage", the administrator's live
status on the home page, and registering a model with its backend's own fields and testing it; in Chromium,
with screenshots in docs/."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelport.db.secrets import PREFIX_LENGTH
from tests.servers import RedisServer, free_port, wait_healthy
from tests.system import System
from tests.test_admin import logged_in, query
from tests.waiting import until

STORY = "{{ bos_token }}Once upon a time, in a small village by the sea,"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).resolve().parent.parent / "docs"


@dataclass
class Site:
    system: System
    admin: str
    gateway: str


@pytest.fixture(scope="module")
def site(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[Site]:
    """``story`` (the bundled model made to tell a story whatever it is asked) and ``quick`` (fake) for the
    group ``students``, of which ``pat`` is a member; ``root`` administers."""
    system = System(f"sqlite:///{tmp_path_factory.mktemp('playground') / 'db.sqlite'}", redis_server, logs)
    system.cli("user", "add", "root", "--admin", "--password-stdin", stdin="root-password\n")
    system.cli("user", "add", "pat", "--password-stdin", stdin="pat-password\n")
    system.cli("group", "add", "students")
    system.cli("user", "join", "pat", "students")
    system.cli("llm", "add", "story", "--backend", "llamacpp", "--n-threads", "1",
               "--config", json.dumps({"chat_template": STORY, "n_ctx": 2048}))
    system.cli("llm", "add", "quick", "--backend", "fake", "--reply", "Short and sweet.")
    for model in ("story", "quick"):
        system.cli("group", "grant", "students", model)
        system.cli("llm", "price", model, "--input", "1000", "--output", "2000")
    system.cli("limit", "set", "group", "students", "--budget-month", "50", "--rpm", "600")
    admin_port, gateway_port = free_port(), free_port()
    gateway = system.gateway_on(gateway_port, MODELPORT_CORS_ORIGINS=json.dumps([f"http://127.0.0.1:{admin_port}"]))
    admin = system.admin_on(admin_port, MODELPORT_PUBLIC_API_URL=gateway)
    system.workers("story", "quick")
    wait_healthy(gateway)
    yield Site(system, admin, gateway)
    system.stop()


def running(site: Site, model: str) -> int:
    """Jobs of ``model`` running, as ``modelport status`` says (the CLI runs its own event loop: in a thread, as
    the browser driver's loop holds this one)."""
    with ThreadPoolExecutor(1) as pool:
        status = json.loads(pool.submit(site.system.cli, "status", "--json").result())
    return int(next(entry["running"] for entry in status["models"] if entry["name"] == model))


def test_the_session_token_is_minted_for_the_page_alone_and_reused(site: Site) -> None:
    client, _ = logged_in(site.admin, "pat", "pat-password")
    refused = client.post("/admin/playground/token")
    assert refused.status_code == 403, "a form posted from another site cannot mint a token"
    page = {"x-csrftoken": client.cookies["starlette_admin_csrftoken"]}
    first = client.post("/admin/playground/token", headers=page).json()
    again = client.post("/admin/playground/token", headers=page).json()
    assert first == again and first["token"].startswith("mp-")
    answer = httpx.post(f"{site.gateway}/v1/chat/completions", headers={"Authorization": f"Bearer {first['token']}"},
                        json={"model": "quick", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert answer.status_code == 200
    [(expires,)] = query(site.system, f"SELECT expires_at FROM apitoken WHERE prefix = "
                                      f"'{first['token'][:PREFIX_LENGTH]}'")
    assert expires is not None
    anonymous = httpx.post(f"{site.admin}/admin/playground/token", headers=page,
                           cookies={"starlette_admin_csrftoken": page["x-csrftoken"]})
    assert anonymous.status_code in (302, 303, 401, 403) and "mp-" not in anonymous.text


def test_the_playground_in_a_real_browser(site: Site) -> None:
    from playwright.sync_api import Page, sync_playwright

    def sign_in(page: Page, user: str, password: str) -> None:
        page.goto(f"{site.admin}/admin/login")
        page.fill("[name=username]", user)
        page.fill("[name=password]", password)
        page.locator("[type=submit]").click()
        page.wait_for_url(lambda url: "/login" not in url)

    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        sign_in(page, "pat", "pat-password")
        assert "You may use 2 models" in page.locator("body").inner_text()
        page.click("#go-playground")
        page.locator(".model-choice[value=quick]").check()
        page.locator(".model-choice[value=story]").check()
        page.fill("#prompt", "Tell me a story.")
        page.fill("#max-tokens", "40")
        page.click("#send")
        for model in ("story", "quick"):
            page.wait_for_function("model => /first token \\d+ ms/.test(document.querySelector("
                                   "`.pane[data-model='${model}'] .pane-stats`)?.textContent)", arg=model)
        page.wait_for_selector("#send:not([disabled])")
        assert page.locator(".pane[data-model=quick] .pane-answer").inner_text() == "Short and sweet."
        assert "tokens/s" in page.locator(".pane[data-model=story] .pane-stats").inner_text()
        snippet = page.locator("#snippet").inner_text()
        assert "$MODELPORT_TOKEN" in snippet and "mp-" not in snippet
        page.screenshot(path=str(DOCS / "playground.png"), full_page=True)

        page.locator(".model-choice[value=quick]").uncheck()
        page.fill("#max-tokens", "1500")
        page.fill("#prompt", "And a much longer one.")
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('.pane[data-model=story] .pane-answer')[1]"
                               "?.textContent.length > 20")
        page.click("#stop")
        page.wait_for_function("document.querySelector('.pane[data-model=story] .pane-stats').textContent"
                               " === 'stopped'")
        until(lambda: len(query(site.system, "SELECT id FROM usagerecord WHERE model = 'story'")) == 2,
              "the stopped request's usage written")
        [(completion,)] = query(site.system, "SELECT completion_tokens FROM usagerecord WHERE model = 'story' "
                                             "ORDER BY id DESC LIMIT 1")
        assert 0 < int(str(completion)) < 1500, "the worker stopped generating when the browser stopped reading"
        until(lambda: running(site, "story") == 0, "the worker has no job left running")

        page.goto(f"{site.admin}/admin/my-usage")
        assert page.locator("#usage-by-model").inner_text().count("story") == 1
        assert page.locator("#usage-recent tbody").inner_text().count("story") == 2
        assert "UTC" not in page.locator("#usage-recent tbody tr").first.inner_text(), "shown in local time"
        [(spent,)] = query(site.system, "SELECT sum(cost) FROM usagerecord r JOIN user u ON u.id = r.user_id "
                                        "WHERE u.name = 'pat'")
        assert f"{float(str(spent)):.4f} USD" in page.locator("#usage-total").inner_text()
        assert "group students" in page.locator("#my-budgets").inner_text()
        assert page.locator("#my-limits tbody tr").first.inner_text().split()[:3] == ["group", "students", "600"]
        assert page.locator("#usage-by-day tbody tr").count() == 1
        page.screenshot(path=str(DOCS / "my-usage.png"), full_page=True)
        unrevoked = "SELECT count(*) FROM apitoken WHERE name = 'playground' AND revoked_at IS NULL"
        [(before,)] = query(site.system, unrevoked)
        page.evaluate("document.querySelector(\"form[action$='/logout']\").submit()")
        page.wait_for_url(lambda url: "/login" in url)
        assert query(site.system, unrevoked) == [(int(str(before)) - 1,)], "signing out revoked its token"

        admin = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        sign_in(admin, "root", "root-password")
        admin.wait_for_function("document.querySelectorAll('#status-workers tbody tr td').length >= 6")
        workers = admin.locator("#status-workers tbody").inner_text()
        assert "story" in workers and "quick" in workers
        assert admin.locator("#status-gateways tbody tr").count() >= 1
        admin.screenshot(path=str(DOCS / "admin-home-status.png"), full_page=True)
        admin.goto(f"{site.admin}/admin/register-model")
        admin.select_option("#backend", "openai_compat")
        assert admin.locator("fieldset[data-backend=openai_compat]").is_visible()
        assert not admin.locator("fieldset[data-backend=llamacpp]").is_visible()
        admin.screenshot(path=str(DOCS / "admin-register-model.png"), full_page=True)
        admin.goto(f"{site.admin}/admin/llm/list")
        admin.screenshot(path=str(DOCS / "admin-models-live.png"), full_page=True)
        admin.goto(f"{site.admin}/admin/spend")
        [(total,)] = query(site.system, "SELECT sum(cost) FROM usagerecord")
        assert admin.locator("#spend-total").inner_text() == f"{float(str(total)):.4f}"
        assert "students" in admin.locator("#spend-by-group").inner_text()
        admin.screenshot(path=str(DOCS / "admin-spend.png"), full_page=True)
        export = admin.request.get(f"{site.admin}/admin/spend/chargeback.csv?group=students")
        lines = list(csv.DictReader(io.StringIO(export.text())))
        assert {line["group"] for line in lines} == {"students"} and {line["user"] for line in lines} == {"pat"}
        [(charged,)] = query(site.system, "SELECT sum(cost) FROM usagerecord r JOIN \"group\" g ON g.id = r.group_id "
                                          "WHERE g.name = 'students'")
        assert sum(float(line["cost"]) for line in lines) == pytest.approx(float(str(charged)), abs=1e-5)
        browser.close()


def register(client: httpx.Client, **fields: str | list[str]) -> httpx.Response:
    form = {"csrftoken": client.cookies["starlette_admin_csrftoken"], "max_queue": "16", "enabled": "on", **fields}
    return client.post("/admin/register-model", data=form)


def test_a_model_is_registered_with_its_backends_own_fields_then_tested(site: Site) -> None:
    client, _ = logged_in(site.admin, "root", "root-password")
    page = client.get("/admin/register-model").text
    assert "The upstream&#39;s API root" in page or "The upstream's API root" in page
    assert 'name="llamacpp.model_path"' in page and 'name="gemini.api_key_env"' in page
    refused = register(client, name="upstream-x", backend="openai_compat", **{"openai_compat.upstream_model": "m"})
    assert refused.status_code == 422
    assert re.search(r'data-field="openai_compat.base_url">[^<]*Field required', refused.text), refused.text
    assert "upstream-x" not in site.system.cli("llm", "list")
    assert register(client, name="quick", backend="fake").status_code == 422, "the name is taken"

    made = register(client, name="pong", backend="fake", groups=["students"], **{"fake.reply": "pong pong"})
    assert made.status_code == 200 and 'data-model="pong"' in made.text
    shown = json.loads(site.system.cli("llm", "show", "pong", "--json"))
    assert shown["enabled"] is True and shown["config"]["reply"] == "pong pong" and shown["groups"] == ["students"]
    assert shown["max_queue"] == 16

    csrf = {"x-csrftoken": client.cookies["starlette_admin_csrftoken"]}
    before = client.post("/admin/register-model/test", data={"model": "pong"}, headers=csrf).json()
    assert before["ok"] is False and before["error"]["code"] == "no_worker"
    site.system.workers("pong")
    after = client.post("/admin/register-model/test", data={"model": "pong"}, headers=csrf).json()
    assert after == {"ok": True, "answer": "pong pong", "elapsed_ms": after["elapsed_ms"], "error": None}
    [(pk,)] = query(site.system, "SELECT id FROM llm WHERE name = 'pong'")
    action = client.post(f"/admin/_api/llm/row-action?name=test&pk={pk}", headers=csrf)
    assert action.status_code == 200, action.text
    listing = client.get("/admin/llm/list").text
    assert "pong answered: pong pong" in listing and "Live workers" in listing

    assert register(client, name="vectors", backend="fake", kind="embedding",
                    **{"fake.dimensions": "5"}).status_code == 200
    assert json.loads(site.system.cli("llm", "show", "vectors", "--json"))["kind"] == "embedding"
    site.system.workers("vectors")
    embedded = client.post("/admin/register-model/test", data={"model": "vectors"}, headers=csrf).json()
    assert embedded["ok"] is True and embedded["answer"] == "a vector of 5 values"


def test_what_only_administrators_may_do_is_refused_to_others(site: Site) -> None:
    client, _ = logged_in(site.admin, "pat", "pat-password")
    csrf = {"x-csrftoken": client.cookies["starlette_admin_csrftoken"]}
    assert client.get("/admin/register-model").status_code == 403
    assert client.post("/admin/register-model/test", data={"model": "quick"}, headers=csrf).status_code == 403
    assert register(client, name="sneaky", backend="fake").status_code == 403
    assert client.get("/admin/status.json").status_code == 403
    assert "sneaky" not in site.system.cli("llm", "list")
    assert client.get("/admin/my-usage").status_code == 200 and client.get("/admin/playground").status_code == 200


def test_the_registration_form_bounds_what_it_takes(site: Site) -> None:
    client, _ = logged_in(site.admin, "root", "root-password")
    cases: list[tuple[dict[str, str | list[str]], str]] = [
        ({"max_queue": "100001"}, "max_queue"), ({"max_queue": "-3"}, "max_queue"),
        ({"groups": ["no-such-group"]}, "groups"), ({"name": "bad name!"}, "name"),
        ({"backend": "nonsense"}, "backend"), ({"fake.delay_ms": "-5"}, "fake.delay_ms"), ({"kind": "vision"}, "kind")]
    for fields, field in cases:
        refused = register(client, **{"name": "bounded", "backend": "fake", **fields})
        assert refused.status_code == 422 and f'data-field="{field}"' in refused.text, (fields, refused.text[-400:])
    assert "bounded" not in site.system.cli("llm", "list")
    csrf = {"x-csrftoken": client.cookies["starlette_admin_csrftoken"]}
    unknown = client.post("/admin/register-model/test", data={"model": "x" * 5000}, headers=csrf).json()
    assert unknown["ok"] is False and unknown["error"]["status"] == 404


def test_prices_and_budgets_are_set_in_the_admin_forms_and_checked(site: Site) -> None:
    client, _ = logged_in(site.admin, "root", "root-password")
    csrf = client.cookies["starlette_admin_csrftoken"]
    site.system.cli("group", "add", "budgeted")
    [(group_id,)] = query(site.system, "SELECT id FROM \"group\" WHERE name = 'budgeted'")
    limit = {"scope": "group", "subject_id": str(group_id), "requests_per_minute": "0", "tokens_per_minute": "0",
             "tokens_per_day": "0", "concurrent_requests": "0", "budget_day": "-1", "csrftoken": csrf}
    refused = client.post("/admin/limit/create", data=limit)
    assert refused.status_code == 422 and "Zero (none) or more." in refused.text
    made = client.post("/admin/limit/create", data={**limit, "budget_day": "3.5"})
    assert made.status_code == 303
    assert query(site.system, f"SELECT budget_day, budget_total FROM ratelimit WHERE subject_id = {group_id}") == [
        (3.5, 0.0)]
    llm = {"name": "priced-form", "kind": "chat", "backend": "fake", "config": "{}", "enabled": "on", "max_queue": "4",
           "input_price": "-2", "csrftoken": csrf}
    refused = client.post("/admin/llm/create", data=llm)
    assert refused.status_code == 422 and "Zero (free) or more." in refused.text
    assert client.post("/admin/llm/create", data={**llm, "input_price": "2.5"}).status_code == 303
    assert query(site.system, "SELECT input_price, output_price FROM llm WHERE name = 'priced-form'") == [(2.5, 0.0)]
