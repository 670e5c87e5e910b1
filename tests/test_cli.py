"""The CLI as operators use it: a provisioning script run twice (idempotent) and read back with ``--json``;
every object's list/show/set/remove/enable/disable, with its effect on a live gateway; one-line failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import Live
from tests.servers import free_port
from tests.system import System
from tests.waiting import until

PROVISION = """
set -eu
modelport group add course-a --if-missing
modelport group add course-b --if-missing --priority 1
modelport llm add course-model --backend fake --reply "hello" --if-missing
modelport group grant course-a course-model
modelport group grant course-b course-model
modelport user import "$1"
for n in 01 02 03; do
  modelport token create "student$n" --name course --if-missing | tail -n 1
done
"""


def run(system: System, *command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A shell command as an operator runs it: ``modelport`` on the PATH, settings in the environment."""
    env = {**os.environ, **system.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def read_json(system: System, *args: str) -> Any:
    return json.loads(system.cli(*args, "--json"))


def test_a_provisioning_script_runs_twice_and_reads_back(system: System, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text("name,display_name,email,groups\n" + "".join(
        f"student{n:02d},Student {n},s{n}@uni.example,{'course-a' if n % 2 else 'course-a;course-b'}\n"
        for n in range(1, 51)))
    script = tmp_path / "provision.sh"
    script.write_text(PROVISION)
    first = run(system, "bash", str(script), str(users), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "50 users: 50 added, 0 existed; 75 memberships added" in first.stdout
    secrets = [line for line in first.stdout.splitlines() if line.startswith("mp-")]
    assert len(secrets) == 3
    again = run(system, "bash", str(script), str(users), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "50 users: 0 added, 50 existed; 0 memberships added" in again.stdout
    assert "has an active token named 'course'; none created" in again.stdout

    listed = run(system, "modelport", "user", "list", "--group", "course-b", "--json", cwd=tmp_path)
    course_b = json.loads(listed.stdout)
    assert [user["name"] for user in course_b] == [f"student{n:02d}" for n in range(2, 51, 2)]
    assert set(course_b[0]) == {"name", "display_name", "email", "source", "admin", "active", "removed", "groups",
                                "created_at"}
    assert course_b[0]["groups"] == ["course-a", "course-b"] and course_b[0]["email"] == "s2@uni.example"
    group = read_json(system, "group", "show", "course-a")
    assert isinstance(group, dict) and len(group["members"]) == 50 and group["models"] == ["course-model"]
    tokens = read_json(system, "token", "list", "--user", "student01")
    assert isinstance(tokens, list) and [token["state"] for token in tokens] == ["active"]
    assert "secret" not in json.dumps(tokens) and secrets[0] not in json.dumps(tokens)
    llm = read_json(system, "llm", "show", "course-model")
    assert isinstance(llm, dict) and llm["groups"] == ["course-a", "course-b"] and llm["enabled"] is True


def test_a_bad_csv_is_refused_whole_naming_the_line(system: System, tmp_path: Path) -> None:
    users = tmp_path / "bad.csv"
    users.write_text("name,groups\ncsv-ok,\ncsv-bad,no-such-group\n")
    failed = run(system, "modelport", "user", "import", str(users), cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.strip() == "modelport: line 3: no group named 'no-such-group' (create it first)."
    assert "csv-ok" not in system.cli("user", "list")
    users.write_text("name,shoe_size\ncsv-ok,44\n")
    failed = run(system, "modelport", "user", "import", str(users), cwd=tmp_path)
    assert failed.returncode == 1 and "shoe_size" in failed.stderr and len(failed.stderr.splitlines()) == 1


def test_every_failure_is_one_line_and_a_nonzero_exit(system: System, tmp_path: Path) -> None:
    for command in (("user", "show", "nobody"), ("group", "remove", "nogroup"), ("llm", "set", "nollm", "--max-queue",
                    "3"), ("token", "revoke", "mp-nothing"), ("limit", "show", "user", "nobody"),
                    ("user", "add", "has space")):
        failed = run(system, "modelport", *command, cwd=tmp_path)
        assert failed.returncode != 0, command
        assert len(failed.stderr.strip().splitlines()) == 1 and failed.stderr.startswith("modelport: "), failed.stderr
    unreachable = {**os.environ, **system.env, "MODELPORT_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    failed = subprocess.run([sys.executable, "-m", "modelport", "status"], env=unreachable, capture_output=True,
                            text=True, timeout=120, check=False)
    assert failed.returncode == 1 and failed.stderr.startswith("modelport: Redis (or the network) failed")
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr


def ask(live: Live, token: str, model: str) -> httpx.Response:
    return httpx.post(f"{live.base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)


def test_changes_reach_the_gateway(live: Live) -> None:
    system = live.system
    token = system.user_with_token("fake", user="changing")
    group = read_json(system, "user", "show", "changing")
    assert isinstance(group, dict)
    (group_name,) = group["groups"]
    assert ask(live, token, "fake").status_code == 200
    system.changed("group", "revoke", group_name, "fake")
    until(lambda: ask(live, token, "fake").status_code == 403, "the revoked grant refused")
    system.changed("group", "grant", group_name, "fake")
    until(lambda: ask(live, token, "fake").status_code == 200, "the grant restored")
    system.changed("user", "disable", "changing")
    until(lambda: ask(live, token, "fake").status_code == 401, "the disabled user refused")
    system.changed("user", "enable", "changing")
    until(lambda: ask(live, token, "fake").status_code == 200, "the enabled user served")
    system.changed("user", "remove", "changing")
    until(lambda: ask(live, token, "fake").status_code == 401, "the removed user refused")
    shown = read_json(system, "user", "show", "changing")
    assert isinstance(shown, dict) and shown["removed"] and shown["tokens"][0]["state"] == "revoked"


def test_llm_set_merges_its_config_and_disable_stops_serving(live: Live) -> None:
    system = live.system
    system.cli("llm", "add", "settable", "--backend", "fake", "--reply", "one two")
    system.cli("group", "grant", "everything", "settable")
    system.cli("llm", "set", "settable", "--chunks", "3", "--max-queue", "9")
    shown = read_json(system, "llm", "show", "settable")
    assert isinstance(shown, dict) and shown["config"]["reply"] == "one two" and shown["config"]["chunks"] == 3
    assert shown["max_queue"] == 9
    system.changed("llm", "disable", "settable")
    assert next(llm for llm in read_json(system, "llm", "list") if llm["name"] == "settable")["enabled"] is False
    until(lambda: ask(live, live.token, "settable").status_code == 404, "the disabled LLM refused")
    with pytest.raises(SystemExit):
        system.cli("llm", "set", "settable", "--chunks", "-1")


def test_limits_are_listed_shown_and_removed(system: System) -> None:
    system.cli("group", "add", "limited-lab")
    system.cli("limit", "set", "group", "limited-lab", "--rpm", "7")
    shown = read_json(system, "limit", "show", "group", "limited-lab")
    assert shown == {"scope": "group", "subject": "limited-lab", "requests_per_minute": 7, "tokens_per_minute": 0,
                     "tokens_per_day": 0, "concurrent_requests": 0, "budget_day": 0, "budget_month": 0,
                     "budget_total": 0}
    assert shown in read_json(system, "limit", "list")
    system.cli("limit", "remove", "group", "limited-lab")
    assert shown not in read_json(system, "limit", "list")
    system.cli("group", "set", "limited-lab", "--permission", "create_preset", "--priority", "3")
    group = read_json(system, "group", "show", "limited-lab")
    assert isinstance(group, dict) and group["permissions"] == ["create_preset"] and group["priority"] == 3
    system.cli("group", "remove", "limited-lab")
    assert "limited-lab" not in system.cli("group", "list")


def test_tables_are_plain_and_empty_states_say_what_to_do(system: System) -> None:
    table = system.cli("user", "list").splitlines()
    assert table[0].split()[:3] == ["NAME", "DISPLAY_NAME", "ADMIN"]
    system.cli("user", "add", "tokenless")
    assert system.cli("token", "list", "--user", "tokenless").startswith("No tokens yet: `modelport token create")


def test_the_csv_reader_bounds_its_input(tmp_path: Path) -> None:
    from modelport.cli.user_import import MAX_ROWS, read_users
    from modelport.protocol.errors import InvalidRequest

    many = tmp_path / "many.csv"
    many.write_text("name\n" + "".join(f"u{n}\n" for n in range(MAX_ROWS + 1)))
    with pytest.raises(InvalidRequest, match="more than"):
        read_users(str(many))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("name,email\na,a@x,extra\n")
    with pytest.raises(InvalidRequest, match="line 2 has more fields"):
        read_users(str(ragged))
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"name\n\xff\xfe\n")
    with pytest.raises(InvalidRequest, match="not UTF-8"):
        read_users(str(binary))
    with pytest.raises(InvalidRequest, match="cannot read"):
        read_users(str(tmp_path / "missing.csv"))
