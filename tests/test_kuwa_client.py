"""Kuwa's own client library (``kuwa-client`` from PyPI, as Kuwa users' scripts import it), unchanged,
against a live gateway's ``/v1.0``: streamed and non-streamed answers with Kuwa's exit code, the job id
from ``x-request-id``, and aborting one of two running jobs by that id."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from kuwa.client import BotOperations, KuwaClient, ModelOperations
from kuwa.client.base import StopAsyncGenerator

from tests.live import Live
from tests.waiting import until, until_async

HI = [{"role": "user", "content": "hi"}]
FAKE_REPLY = "Hello from the fake model. 你好，世界！"

# The client opens an httpx.AsyncClient per call and never closes it; its finaliser's ResourceWarning is
# the client's, collected here so that it is not reported against a later test.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning",
                                        "ignore::ResourceWarning")


@pytest.fixture(autouse=True)
def collect_the_clients_leftovers() -> Iterator[None]:
    yield
    gc.collect()


def kuwa(live: Live, model: str = "fake") -> KuwaClient:
    return KuwaClient(base_url=live.base + "/", auth_token=live.token, model=model)


async def answer(chunks: AsyncIterator[str]) -> tuple[str, int | None]:
    """The text and the exit code ``chat_complete_with_exit_code`` ends with."""
    text = ""
    try:
        async for chunk in chunks:
            text += chunk
    except StopAsyncGenerator as end:
        return text, end.value
    return text, None


def test_chat_complete_streamed_and_not(live: Live) -> None:
    client = kuwa(live)

    async def run() -> None:
        assert "".join([chunk async for chunk in client.chat_complete(messages=HI)]) == FAKE_REPLY
        assert "".join([chunk async for chunk in client.chat_complete(messages=HI, streaming=False)]) == FAKE_REPLY
        assert await answer(client.chat_complete_with_exit_code(messages=HI)) == (FAKE_REPLY, 0)
        assert await answer(client.chat_complete_with_exit_code(messages=HI, streaming=False)) == (FAKE_REPLY, 0)

    asyncio.run(run())
    assert client.running_jobs == [], "each job id was recorded and removed when its answer ended"


def test_one_of_two_running_jobs_is_aborted_by_its_id(live: Live) -> None:
    live.system.cli("llm", "add", "kuwa-slow", "--backend", "fake", "--delay-ms", "100", "--chunks", "30")
    live.system.cli("group", "grant", "everything", "kuwa-slow")
    live.system.worker("kuwa-slow")
    client = kuwa(live, "kuwa-slow")

    async def run() -> tuple[list[str], list[tuple[str, int | None]], httpx.Response]:
        answers = [asyncio.create_task(answer(client.chat_complete_with_exit_code(messages=HI)))
                   for _ in range(2)]

        async def both_running() -> bool:
            return len(client.running_jobs) == 2

        await until_async(both_running, "both jobs have their ids from x-request-id")
        ids = list(client.running_jobs)
        # The client's own abort() passes requests' allow_redirects to httpx and raises before sending
        # anything (its bug); its body is sent as it would send it.
        async with httpx.AsyncClient(base_url=live.base) as http:
            aborted = await http.post("/v1.0/chat/abort", json={"ids": ids[:1]},
                                      headers={"Authorization": f"Bearer {live.token}"})
        return ids, [await task for task in answers], aborted

    ids, endings, aborted = asyncio.run(run())
    assert all(job_id.startswith("chatcmpl-") for job_id in ids) and len(set(ids)) == 2
    assert aborted.json() == {"object": "chat.abort", "cancelled": 1}
    [finished] = [text for text, exit_code in endings if exit_code == 0]
    [cut] = [text for text, exit_code in endings if exit_code == 1]
    assert finished.startswith(cut) and len(cut) < len(finished), "the aborted job stopped, the other finished"


def test_abort_body_is_bounded_and_only_touches_the_callers_jobs(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.token}"}
    someone_elses = httpx.post(f"{live.base}/v1.0/chat/abort", json={"ids": ["chatcmpl-" + "0" * 32]},
                               headers=headers)
    assert someone_elses.json() == {"object": "chat.abort", "cancelled": 0}
    too_many = httpx.post(f"{live.base}/v1.0/chat/abort", json={"ids": ["x"] * 257}, headers=headers)
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "ids"
    not_a_list = httpx.post(f"{live.base}/v1.0/chat/abort", json={"ids": "chatcmpl-1"}, headers=headers)
    assert not_a_list.status_code == 400
    not_json = httpx.post(f"{live.base}/v1.0/chat/abort", content=b"{", headers=headers)
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"


def test_bots_by_name_and_an_inline_botfile(live: Live) -> None:
    live.system.cli("llm", "add", "kuwa-echo", "--backend", "fake", "--config", '{"echo": true}')
    live.system.cli("group", "grant", "everything", "kuwa-echo")
    live.system.worker("kuwa-echo")
    live.system.cli("preset", "add", "parrot", "--llm", "kuwa-echo", "--before-prompt", "Polly says ",
                    "--max-tokens", "4")
    live.system.cli("preset", "add", "default", "--llm", "kuwa-echo", "--after-prompt", " (by default)")
    say = [{"role": "user", "content": "hello there my friend and more"}]

    async def run() -> list[tuple[str, int | None]]:
        return [
            await answer(kuwa(live, ".bot/parrot").chat_complete_with_exit_code(messages=say)),
            await answer(kuwa(live, ".bot/parrot").chat_complete_with_exit_code(messages=say, streaming=False)),
            await answer(KuwaClient(base_url=live.base + "/", auth_token=live.token).chat_complete_with_exit_code(
                messages=[{"role": "user", "content": "hi"}])),
            await answer(kuwa(live, "kuwa-echo").chat_complete_with_exit_code(
                messages=say, botfile='BEFORE-PROMPT "Echo: "\nPARAMETER max_tokens 2')),
            await answer(kuwa(live, ".bot/parrot").chat_complete_with_exit_code(
                messages=say, botfile='AFTER-PROMPT """ or not"""\nPARAMETER max_tokens 100')),
        ]

    parrot, parrot_whole, default, inline, capped = asyncio.run(run())
    assert parrot == parrot_whole == ("Polly says hello there ", 0), "the preset's text and max_tokens held"
    assert default == ("hi (by default)", 0), "Kuwa's default model is the preset named default"
    assert inline == ("Echo: hello ", 0)
    assert capped == ("Polly says hello there ", 0), "a botfile cannot raise the preset's max_tokens"


def test_the_user_api_lists_models_and_bots_and_creates_private_bots(live: Live) -> None:
    live.system.cli("group", "add", "bot-makers", "--permission", "create_preset")
    live.system.cli("user", "add", "maker")
    live.system.cli("user", "join", "maker", "bot-makers")
    live.system.cli("group", "grant", "bot-makers", "fake")
    maker = live.system.cli("token", "create", "maker").strip().splitlines()[-1]
    operations = BotOperations(base_url=live.base + "/", auth_token=maker)
    models = ModelOperations(base_url=live.base + "/", auth_token=maker).list_base_models()
    assert models["status"] == "success" and [model["access_code"] for model in models["result"]] == ["fake"]
    created = operations.create_bot("fake", "makers-bot", {"modelfile": "SYSTEM Be brief.", "bot_describe": "mine"})
    assert created["status"] == "success" and isinstance(created["last_bot_id"], int)
    until(lambda: any(bot["name"] == "makers-bot" for bot in operations.list_bots()["result"]),
          "the new bot is listed", 2)
    [bot] = [bot for bot in operations.list_bots()["result"] if bot["name"] == "makers-bot"]
    assert (bot["access_code"], bot["llm_name"], bot["visibility"], bot["description"]) == (
        ".bot/makers-bot", "fake", 3, "mine")
    others = BotOperations(base_url=live.base + "/", auth_token=live.other_token).list_bots()["result"]
    assert "makers-bot" not in [bot["name"] for bot in others], "a private bot is its owner's"

    def refused(token: str, body: dict[str, object]) -> httpx.Response:
        return httpx.post(f"{live.base}/api/user/create/bot", json=body, headers={"Authorization": f"Bearer {token}"})

    no_permission = refused(live.other_token, {"llm_access_code": "fake", "bot_name": "nope"})
    assert no_permission.status_code == 403 and "create_preset" in no_permission.json()["error"]["message"]
    assert refused(maker, {"llm_access_code": "oc", "bot_name": "nope"}).status_code == 403, "not the maker's LLM"
    assert refused(maker, {"llm_access_code": "fake", "bot_name": "nope", "visibility": 0}).status_code == 403
    assert refused(maker, {"llm_access_code": "fake", "bot_name": "makers-bot"}).status_code == 400, "taken"
    assert refused(maker, {"llm_access_code": "fake", "bot_name": "bad name!"}).status_code == 400
    assert refused(maker, {"llm_access_code": "fake"}).status_code == 400
    rooms = httpx.get(f"{live.base}/api/user/read/rooms", headers={"Authorization": f"Bearer {maker}"})
    assert rooms.status_code == 404 and "Kuwa's chat application" in rooms.json()["error"]["message"]
