"""Spend: prices make a cost per request (on the usage row, in a header, in the stream's usage chunk); budgets
per day, month and in all are reserved at admission and settled to the exact cost, across gateways; periods
follow the installation's clock and time zone (injected here, never waited for)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest
import redis.asyncio

from modelport.broker.gateway import GatewayBroker
from modelport.broker.limits import BudgetAlert, LimitSubject, RateLimiter
from modelport.protocol import keys
from modelport.protocol.errors import QuotaExceeded
from modelport.protocol.spend import MICROS
from tests.live import Live
from tests.servers import RedisServer
from tests.system import usage_by_user
from tests.waiting import until

PER_WORD = 0.01  # the priced models' output price: 10,000 per million tokens, a cent a word


async def test_budget_periods_follow_the_installations_day_and_month(gateway: GatewayBroker,
                                                                     probe: redis.asyncio.Redis) -> None:
    limits = gateway.limits
    berlin = ZoneInfo("Europe/Berlin")
    daily = LimitSubject("user:90001", budget_day=1.0, label="user dora")
    late = datetime(2026, 11, 30, 22, 50, tzinfo=UTC)  # 23:50 in Berlin
    first = await limits.admit([daily], 10, cost=0.6, now=late, zone=berlin)
    with pytest.raises(QuotaExceeded) as refused:
        await limits.admit([daily], 10, cost=0.6, now=late, zone=berlin)
    assert "daily budget of user dora (1.0000 USD) is spent: 0.6000 USD used" in refused.value.message
    assert "resets at 2026-12-01 00:00 CET" in refused.value.message and refused.value.retry_after == 600
    await limits.settle(first, 10, cost=0.25)
    second = await limits.admit([daily], 10, cost=0.6, now=late, zone=berlin)  # 0.25 + 0.6 fits now
    await limits.settle(second, 10, cost=0.6)
    after_midnight = datetime(2026, 11, 30, 23, 10, tzinfo=UTC)  # 00:10 on December 1st in Berlin
    await limits.settle(await limits.admit([daily], 10, cost=0.9, now=after_midnight, zone=berlin), 10, cost=0.9)

    monthly = LimitSubject("group:90002", budget_month=2.1, label="group lab")
    for day in (1, 15, 30):
        admission = await limits.admit([monthly], 10, cost=0.7, now=datetime(2026, 11, day, 12, tzinfo=UTC))
        await limits.settle(admission, 10, cost=0.7)
    with pytest.raises(QuotaExceeded, match="monthly budget of group lab"):
        await limits.admit([monthly], 10, cost=0.7, now=datetime(2026, 11, 30, 13, tzinfo=UTC))
    december = await limits.admit([monthly], 10, cost=0.7, now=datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    await limits.settle(december, 10, cost=0.7)
    stored = await probe.hget(keys.limit_keys("group:90002")[4], "month")
    assert stored == b"2026-12:700000"


async def test_alerts_are_raised_once_at_80_and_100_percent(redis_server: RedisServer) -> None:
    alerts: list[BudgetAlert] = []
    client = redis.asyncio.Redis.from_url(redis_server.url)
    limits = RateLimiter(client, lease_ms=10_000, on_alert=alerts.append)
    total = LimitSubject("token:90003", budget_total=1.0)
    try:
        for cost in (0.5, 0.35, 0.05, 0.1):
            await limits.settle(await limits.admit([total], 1, cost=cost), 1, cost=cost)
        assert [(alert.budget, alert.level, alert.spent / MICROS) for alert in alerts] == [
            ("total", 80, 0.85), ("total", 100, 1.0)]
        with pytest.raises(QuotaExceeded, match=r"total budget .* it is a total"):
            await limits.admit([total], 1, cost=0.01)
    finally:
        await client.aclose()


def priced_user(live: Live, name: str, budget: str = "", chunks: int = 10) -> str:
    """A user alone in a group of their own (with ``budget`` in all, if given) and a token for the model
    ``priced-NAME`` (``chunks`` words, a cent each)."""
    system = live.system
    model = f"priced-{name}"
    system.cli("llm", "add", model, "--backend", "fake", "--chunks", str(chunks), "--delay-ms", "20")
    system.cli("llm", "price", model, "--input", "0", "--output", str(PER_WORD * 1_000_000))
    token = system.user_with_token(model, user=name)
    if budget:
        group = json.loads(system.cli("user", "show", name, "--json"))["groups"][0]
        system.cli("limit", "set", "group", group, "--budget-total", budget)
    system.workers(model)
    return token


def ask(live: Live, token: str, model: str, **extra: object) -> httpx.Response:
    return httpx.post(f"{live.base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}, timeout=30)


def test_each_request_is_charged_its_cost_where_the_client_and_the_books_see_it(live: Live) -> None:
    token = priced_user(live, "payer", chunks=7)
    answer = ask(live, token, "priced-payer")
    assert answer.status_code == 200 and answer.headers["x-modelport-cost"] == "0.07000000"
    client = openai.OpenAI(base_url=f"{live.base}/v1", api_key=token, max_retries=0)
    chunks = list(client.chat.completions.create(model="priced-payer", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    client.close()
    assert chunks[-1].usage is not None and chunks[-1].model_extra == {"x_modelport": {"cost": 0.07}}
    rows = usage_by_user(live.system.database_url, ["payer"], at_least=2)["payer"]
    assert [row.cost for row in rows] == [0.07, 0.07] and rows[0].group_id is not None
    assert "x-modelport-cost" not in ask(live, live.token, "fake").headers, "a free model says nothing of cost"


def test_a_spent_budget_is_the_sdks_insufficient_quota(live: Live) -> None:
    token = priced_user(live, "spender", budget="0.25")
    client = openai.OpenAI(base_url=f"{live.base}/v1", api_key=token, max_retries=0)
    for _ in range(2):  # a dime each, reserved as such (ten tokens at most)
        client.chat.completions.create(model="priced-spender", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=10)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="priced-spender", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=10)
    client.close()
    assert refused.value.code == "insufficient_quota"
    assert "The total budget of group" in refused.value.message and "0.2000 USD used" in refused.value.message


def test_two_gateways_share_one_budget_and_the_books_match(live: Live) -> None:
    """Twenty requests at once through two gateways against a budget of five: five are served, the spend in
    Redis is what the usage rows say, and it never passes the budget by more than one reservation."""
    token = priced_user(live, "sharer", budget="0.5")
    second = live.system.gateway()
    bases = [live.base, second]

    def one(i: int) -> int:
        return httpx.post(f"{bases[i % 2]}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                          json={"model": "priced-sharer", "max_tokens": 10,
                                "messages": [{"role": "user", "content": "hi"}]}, timeout=30).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(one, range(20)))
    assert statuses.count(200) == 5 and statuses.count(429) == 15, statuses
    rows = usage_by_user(live.system.database_url, ["sharer"], at_least=5)["sharer"]
    group_id = rows[0].group_id
    books = round(sum(row.cost for row in rows) * MICROS)
    until(lambda: spend(live, f"group:{group_id}", "total") == books, "the reservations settled to the usage rows")
    assert books <= (0.5 + 0.1) * MICROS
    alerts = [line for base in bases for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines()
              if line.startswith('modelport_budget_alerts_total{budget="total",level="100",scope="group"}')]
    assert sum(float(line.split()[1]) for line in alerts) >= 1, "the spent budget was counted for alerting"


def spend(live: Live, subject: str, budget: str) -> int:
    """A subject's spend in Redis (micro-units)."""
    async def read() -> int:
        client = redis.asyncio.Redis.from_url(live.system.redis_url)
        try:
            stored: bytes | None = await client.hget(keys.limit_keys(subject)[4], budget)  # type: ignore[assignment]
        finally:
            await client.aclose()
        return int(stored.decode().rpartition(":")[2]) if stored else 0

    return asyncio.run(read())


def test_a_stream_dropped_midway_is_charged_what_was_produced(live: Live) -> None:
    token = priced_user(live, "leaver", budget="100", chunks=200)
    with httpx.stream("POST", f"{live.base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                      json={"model": "priced-leaver", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                      timeout=30) as answer:
        lines = answer.iter_lines()
        for _ in range(10):
            next(line for line in lines if line.startswith("data: "))
    [row] = usage_by_user(live.system.database_url, ["leaver"], at_least=1)["leaver"]
    assert row.status == 499 and 10 <= row.completion_tokens < 200
    assert row.cost == pytest.approx(row.completion_tokens * PER_WORD)
    until(lambda: spend(live, f"group:{row.group_id}", "total") == round(row.cost * MICROS),
          "the budget settled to what was produced")


def test_users_read_their_spend_and_operators_report_it(live: Live) -> None:
    token = priced_user(live, "reporter", chunks=4)
    for _ in range(3):
        assert ask(live, token, "priced-reporter").status_code == 200
    rows = usage_by_user(live.system.database_url, ["reporter"], at_least=3)["reporter"]
    headers = {"Authorization": f"Bearer {token}"}
    mine = httpx.get(f"{live.base}/v1/usage", headers=headers).json()
    assert mine["object"] == "usage" and mine["period"] == "month" and mine["currency"] == "USD"
    assert mine["total_cost"] == pytest.approx(0.12) and mine["total_tokens"] == sum(
        row.prompt_tokens + row.completion_tokens for row in rows) and mine["total_requests"] == 3
    assert [entry["model"] for entry in mine["by_model"]] == ["priced-reporter"] and len(mine["by_day"]) == 1
    assert httpx.get(f"{live.base}/v1/usage", params={"period": "day"}, headers=headers).json()["total_requests"] == 3
    refused = httpx.get(f"{live.base}/v1/usage", params={"period": "week"}, headers=headers)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "period"
    assert httpx.get(f"{live.base}/v1/usage").status_code == 401

    group = json.loads(live.system.cli("user", "show", "reporter", "--json"))["groups"][0]
    report = list(csv.DictReader(io.StringIO(live.system.cli("usage", "report", "--group", group, "--csv"))))
    assert [(line["user"], line["model"], line["requests"]) for line in report] == [("reporter", "priced-reporter",
                                                                                      "3")]
    assert sum(float(line["cost"]) for line in report) == pytest.approx(sum(row.cost for row in rows))
    table = live.system.cli("usage", "report")
    assert "priced-reporter" in table and " in all" in table
    with pytest.raises(SystemExit):
        live.system.cli("usage", "report", "--month", "November")


def test_a_deployment_priced_apart_charges_its_own_price(live: Live) -> None:
    system = live.system
    system.cli("llm", "add", "tiered", "--backend", "fake", "--reply", "one two three four")
    system.cli("llm", "deploy", "tiered", "premium", "--backend", "fake", "--reply", "one two three four")
    system.cli("llm", "price", "tiered", "--input", "0", "--output", str(PER_WORD * 1_000_000))
    system.cli("llm", "price", "tiered", "--deployment", "premium", "--input", "0", "--output",
               str(3 * PER_WORD * 1_000_000))
    assert json.loads(system.cli("llm", "show", "tiered", "--json"))["deployment_configs"]["premium"]["backend"] == (
        "fake")
    token = system.user_with_token("tiered", user="premium-user")
    system.worker("tiered", deployment="premium")
    answer = ask(live, token, "tiered")
    assert answer.status_code == 200 and answer.headers["x-modelport-cost"] == "0.12000000", "three cents a word"
    [row] = usage_by_user(system.database_url, ["premium-user"], at_least=1)["premium-user"]
    assert row.cost == pytest.approx(0.12)
    with pytest.raises(SystemExit):
        system.cli("llm", "price", "tiered", "--deployment", "nowhere", "--input", "1", "--output", "1")


def test_a_budget_survives_redis_losing_the_spend(live: Live) -> None:
    """The spend counters start from the usage rows: after Redis lost them, a spent budget is still spent."""
    token = priced_user(live, "forgotten", budget="0.25")
    for _ in range(2):
        assert ask(live, token, "priced-forgotten", max_tokens=10).status_code == 200
    [row, _] = usage_by_user(live.system.database_url, ["forgotten"], at_least=2)["forgotten"]

    async def forget() -> None:
        client = redis.asyncio.Redis.from_url(live.system.redis_url)
        try:
            assert await client.delete(keys.limit_keys(f"group:{row.group_id}")[4]) == 1
        finally:
            await client.aclose()

    asyncio.run(forget())
    refused = ask(live, token, "priced-forgotten", max_tokens=10)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    assert spend(live, f"group:{row.group_id}", "total") == round(0.2 * MICROS), "seeded from the usage rows"
