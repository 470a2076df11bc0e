"""`tailor serve` (issue 13): the `openai` package as the real client, a bounded load test on 127.0.0.1."""
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from app.serve import MAX_TOKENS_CAP, Server, ServeError, parse_request
from tests.conftest import REPO, SAMPLES

TOKEN = "s3cret"


def test_requests_are_checked_field_by_field():
    ok = parse_request(json.dumps({"model": "x", "messages": [{"role": "user", "content": "hi"}]}).encode())
    assert ok["max_tokens"] == 256 and ok["stream"] is False and ok["seed"] is None
    parts = parse_request(json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                               {"type": "text", "text": "b"}]}]}).encode())
    assert parts["messages"][0]["content"] == "ab"
    bad = {
        b"not json": "not JSON",
        b"[1]": "JSON object",
        json.dumps({"messages": []}).encode(): "non-empty list",
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode(): "'role'",
        json.dumps({"messages": [{"role": "user", "content": 3}]}).encode(): "'content'",
        json.dumps({"messages": [{"role": "assistant", "content": "x"}]}).encode(): "last message",
        json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": MAX_TOKENS_CAP + 1}).encode():
            "'max_tokens'",
        json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": 9}).encode(): "'temperature'",
        json.dumps({"messages": [{"role": "user", "content": "x"}], "seed": "1"}).encode(): "'seed'",
    }
    for body, msg in bad.items():
        with pytest.raises(ServeError, match=msg) as e:
            parse_request(body)
        assert e.value.status == 400


def test_only_this_machine_without_a_token(tailor):
    with pytest.raises(ServeError, match="needs a token"):
        Server(tailor, "0.0.0.0", 0)


@pytest.fixture
def server(tailor):
    tailor.import_paths([SAMPLES / "packaging"])
    tailor.adapt(load=True)
    srv = Server(tailor, "127.0.0.1", 0, TOKEN, queue=4)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def client(srv, key=TOKEN):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", api_key=key, max_retries=0,
                         timeout=300)


def test_openai_client_streaming_and_not(server):
    c = client(server)
    assert [m.id for m in c.models.list()] == ["tailor"]
    msgs = [{"role": "user", "content": "Write one sentence about packaging."}]
    a = c.chat.completions.create(model="tailor", messages=msgs, max_tokens=16, seed=3)
    b = c.chat.completions.create(model="tailor", messages=msgs, max_tokens=16, seed=3)
    assert a.choices[0].message.content and a.choices[0].message.content == b.choices[0].message.content
    assert a.model == "tailor-v1"                                     # the person's adapter answered
    u = a.usage                                  # counted by the engine, not invented: the prompt holds the request
    assert 10 < u.prompt_tokens < 200 and 0 < u.completion_tokens <= 16
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    chunks = list(c.chat.completions.create(model="tailor", messages=msgs, max_tokens=16, seed=3, stream=True))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks).strip()
    assert streamed == a.choices[0].message.content
    assert a.choices[0].finish_reason == ("length" if u.completion_tokens == 16 else "stop")   # cut, or ended
    assert chunks[-1].choices[0].finish_reason == a.choices[0].finish_reason
    with pytest.raises(openai.AuthenticationError):
        client(server, "wrong").chat.completions.create(model="tailor", messages=msgs, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        c.chat.completions.create(model="tailor", messages=msgs, max_tokens=MAX_TOKENS_CAP + 1)


def test_32_concurrent_streams_answered_or_refused_cleanly_with_a_swap_midway(server, tailor):
    """Every request is answered whole or refused with 429; no stream carries another's text; regenerating the
    adapter during the load is safe and later requests get the new one."""
    c = client(server)
    msgs = [{"role": "user", "content": "Name a packaging tool."}]
    ref = {}
    for seed in range(4):          # what each seed answers alone, under the first adapter
        ref[seed] = c.chat.completions.create(model="tailor", messages=msgs, max_tokens=8, seed=seed
                                              ).choices[0].message.content
    started = threading.Event()

    def one(i):
        try:
            started.set()
            chunks = list(c.chat.completions.create(model="tailor", messages=msgs, max_tokens=8, seed=i % 4,
                                                    stream=True))
            return ("ok", i % 4, chunks[0].model, "".join(ch.choices[0].delta.content or "" for ch in chunks).strip())
        except openai.RateLimitError:
            return ("429", i % 4, None, None)

    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(one, i) for i in range(32)]
        started.wait(30)
        swapped = tailor.adapt()                                      # a new adapter while requests run
        results = [f.result() for f in futures]
    done = [r for r in results if r[0] == "ok"]
    assert len(done) + sum(r[0] == "429" for r in results) == 32 and done
    assert any(r[0] == "429" for r in results)                        # the queue (4) was full at some point
    for _, seed, model, text in done:                                  # each answer is one request's, whole
        if model == "tailor-v1":
            assert text == ref[seed]
    after = c.chat.completions.create(model="tailor", messages=msgs, max_tokens=8, seed=0)
    assert after.model == f"tailor-v{swapped.version}" and swapped.version == 2


def test_tailor_serve_command(home):
    """The CLI command announces its address and answers the openai client there."""
    env = {**os.environ, "TAILOR_HOME": str(home)}
    p = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", "0"], cwd=REPO, env=env,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert "serving" in line and "/v1" in line, line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=300)
        r = c.chat.completions.create(model="tailor", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert r.model == "tailor-base" and r.choices[0].message.content is not None   # no documents: the base
    finally:
        p.terminate()
        p.wait(30)
