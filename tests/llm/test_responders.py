"""Responders against real servers: an OpenAI-compatible streaming server on loopback (tests/openai_fake.py)."""
from __future__ import annotations

import uuid

import pytest
from gradio_client import Client
from openai_fake import CompletionsServer as _CompletionsServer

from chatcore.llm.responders import ResponderError, echo_stream, make_openai


def test_echo_streams_word_by_word():
    pieces = list(echo_stream("a b c", []))
    assert pieces == ["You", " said:", " a", " b", " c"]
    assert "".join(echo_stream("x", [{"role": "user", "content": "p"}])).endswith("(message 2 in this conversation)")


def test_openai_streams_and_sends_history(monkeypatch):
    with _CompletionsServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_MODEL", "tiny-model")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
        responder = make_openai()
        history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        pieces = list(responder.stream("where is my parcel?", history))
    assert len(pieces) == 5
    assert "".join(pieces) == "Model reply to: where is my parcel? (3 msgs)"
    sent = server.requests[0]
    assert sent["body"]["stream"] is True and sent["body"]["model"] == "tiny-model"
    assert sent["body"]["messages"] == history + [{"role": "user", "content": "where is my parcel?"}]
    assert sent["auth"] == "Bearer sk-test-secret"


@pytest.mark.parametrize("mode, message", [("500", "HTTP 500"), ("garbage", "malformed")])
def test_openai_failures_are_responder_errors(monkeypatch, mode, message):
    with _CompletionsServer(mode) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        with pytest.raises(ResponderError, match=message):
            list(make_openai().stream("x", []))


def test_hf_streams_through_huggingface_hub_against_a_local_server(monkeypatch):
    """The hf responder is huggingface_hub's InferenceClient.chat_completion(stream=True),
    pointed at a TGI-style server on loopback (HF_BASE_URL) since the Hub is not reachable here."""
    from chatcore.llm.responders import make_hf

    with _CompletionsServer() as server:
        monkeypatch.setenv("HF_BASE_URL", server.url.removesuffix("/v1"))
        monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
        responder = make_hf()
        pieces = list(responder.stream("hello hub", [{"role": "user", "content": "a"},
                                                      {"role": "assistant", "content": "b"}]))
        server.mode = "500"
        with pytest.raises(ResponderError) as info:
            list(responder.stream("again", []))
    assert "".join(pieces) == "Model reply to: hello hub (3 msgs)" and len(pieces) == 5
    assert server.requests[0]["body"]["stream"] is True
    assert server.requests[0]["auth"] == "Bearer hf_secret_token"
    assert "hf_secret_token" not in str(info.value)


def test_openai_unreachable_does_not_leak_the_key(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://user:pw@127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    with pytest.raises(ResponderError) as info:
        list(make_openai().stream("x", []))
    assert "secret" not in str(info.value) and "pw" not in str(info.value)


def test_space_with_openai_backend_end_to_end(space_factory, tmp_path):
    """The Space talks to the model server; history goes as messages; a failure is logged with error."""
    with _CompletionsServer() as server:
        sp = space_factory(tmp_path / "oa" / "log.jsonl", args=["--responder", "openai"],
                           env={"OPENAI_BASE_URL": server.url, "OPENAI_MODEL": "m1",
                                "OPENAI_API_KEY": "sk-never-logged"})
        client = Client(sp.url, verbose=False)
        cid = str(uuid.uuid4())
        assert client.predict(message={"text": "first", "files": []}, conversation_id=cid,
                              api_name="/chat") == "Model reply to: first (1 msgs)"
        job = client.submit(message={"text": "second", "files": []}, conversation_id=cid, api_name="/chat")
        chunks = list(job)
        assert chunks[-1] == "Model reply to: second (3 msgs)" and len(chunks) >= 4
        assert server.requests[1]["body"]["messages"][:2] == [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "Model reply to: first (1 msgs)"},
        ]
        server.mode = "500"
        reply = client.predict(message={"text": "third", "files": []}, conversation_id=cid, api_name="/chat")
    assert "could not answer" in reply
    recs = sp.records()
    assert [(r["turn"], r["backend"], r["model"]) for r in recs] == [(0, "openai", "m1"), (1, "openai", "m1"), (2, "openai", "m1")]
    assert recs[0]["error"] is None and "HTTP 500" in recs[2]["error"]
    assert sp.health()["responder_errors"] == 1
    assert "sk-never-logged" not in sp.log_path.read_text()
