"""LangChain's OpenAI integrations, unchanged, against the live gateway: ``OpenAIEmbeddings`` for documents
and queries, and ``ChatOpenAI`` on the Responses API (plain and with a bound tool)."""

from __future__ import annotations

import math

from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import SecretStr

from tests.live import Live

FAKE_REPLY = "Hello from the fake model. 你好，世界！"


def test_openai_embeddings_embed_documents_and_queries(live: Live) -> None:
    embeddings = OpenAIEmbeddings(model="fake-embed", openai_api_base=f"{live.base}/v1",
                                  openai_api_key=SecretStr(live.token),
                                  check_embedding_ctx_length=False, max_retries=0)
    documents = embeddings.embed_documents(["first document", "second document", "first document"])
    assert len(documents) == 3 and documents[0] == documents[2] != documents[1]
    query = embeddings.embed_query("first document")
    assert len(query) == 8 and math.isclose(math.fsum(value * value for value in query), 1, rel_tol=1e-5)
    assert [round(value, 6) for value in query] == [round(value, 6) for value in documents[0]]


def test_chat_openai_on_the_responses_api(live: Live) -> None:
    chat = ChatOpenAI(model="fake", base_url=f"{live.base}/v1", api_key=SecretStr(live.token), max_retries=0,
                      use_responses_api=True)
    answer = chat.invoke("hi")
    assert answer.text == FAKE_REPLY
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] == 6
    streamed = "".join(chunk.text for chunk in chat.stream("hi"))
    assert streamed == FAKE_REPLY
    tools = ChatOpenAI(model="oc-tools", base_url=f"{live.base}/v1", api_key=SecretStr(live.token), max_retries=0,
                       use_responses_api=True).bind_tools([{
                           "type": "function", "function": {"name": "get_weather", "description": "The weather",
                                                            "parameters": {"type": "object", "properties": {
                                                                "city": {"type": "string"}}}}}])
    called = tools.invoke("Weather in Taipei?")
    assert [(call["name"], call["args"]) for call in called.tool_calls] == [("get_weather", {"city": "Taipei"})]
