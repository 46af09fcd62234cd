"""OpenAI-compatible teacher client against misbehaving servers: unusable 200 answers, list-form content, a
trickling server (the timeout is a total deadline), Retry-After past the backoff cap, and where the API key goes."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import pytest
from openai_fakes import BackgroundLoop, FakeOpenAIServer, Script, fake_reply, make_problems, make_teacher

from ahalab.data.teachers import OpenAITeacher, TeacherError
from ahalab.engines.http import _retry_after, backoff_delay
from ahalab.errors import UserError
from ahalab.runs import read_jsonl


@pytest.fixture
def loop():
    background = BackgroundLoop()
    yield background
    background.stop()


def serve(loop: BackgroundLoop, script: Script | None = None, trickle: float = 0.0) -> tuple[str, FakeOpenAIServer]:
    server = FakeOpenAIServer(script=script, trickle=trickle)
    return f"http://127.0.0.1:{loop.run(server.start())}/v1", server


def with_message(body: dict[str, Any], message: Any) -> dict[str, Any]:
    reply = fake_reply(body, reasoning=False)
    reply["choices"][0]["message"] = message
    return reply


def first_then_ok(first: Callable[[dict[str, Any]], tuple[int, Any, dict[str, str]]]) -> Script:
    """A script: ``first(body)`` answers the first request, ``fake_reply`` the others."""
    return lambda n, body: first(body) if n == 1 else (200, fake_reply(body, False), {})


def test_null_message_is_retried_then_reported_for_that_trace_only(loop, tmp_path):
    url, server = serve(loop, first_then_ok(lambda body: (200, with_message(body, None), {})))
    [trace] = make_teacher(url).generate(make_problems(1))
    assert trace.text.startswith("<think>") and server.requests == 2

    problems = make_problems(2)
    bad = problems[0].question

    def script(n: int, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        return 200, with_message(body, None) if bad in json.dumps(body) else fake_reply(body, False), {}

    url, _ = serve(loop, script)
    teacher = OpenAITeacher(url, "m", make_teacher(url).task, max_retries=2, backoff_base=0.01)
    with pytest.raises(TeacherError, match=r"1 of 2 traces failed .*gave up after 3 attempts .*message is null"):
        teacher.generate(problems, cache=tmp_path / "c.jsonl")
    assert [row["problem_id"] for row in read_jsonl(tmp_path / "c.jsonl")] == [problems[1].id]


def test_list_content_parts_are_joined_into_text(loop):
    parts = [{"type": "text", "text": "<think>4</think>\n"}, {"type": "image_url", "image_url": {"url": "x"}},
             {"type": "text", "text": "<answer>4</answer>"}]
    message = {"role": "assistant", "content": parts, "reasoning_content": [{"type": "text", "text": "hm"}]}
    url, _ = serve(loop, lambda n, body: (200, with_message(body, message), {}))
    [trace] = make_teacher(url).generate(make_problems(1))
    assert trace.text == "<think>4</think>\n<answer>4</answer>" and trace.reasoning == "hm"

    url, _ = serve(loop, lambda n, body: (200, with_message(body, {"content": [1, 2]}), {}))
    teacher = OpenAITeacher(url, "m", make_teacher(url).task, max_retries=0)
    with pytest.raises(TeacherError, match=r"message.content is not text"):
        teacher.generate(make_problems(1))


def test_timeout_is_a_total_deadline_against_a_trickling_server(loop):
    url, server = serve(loop, trickle=0.02)  # a byte every 20 ms: each read is quick, the answer takes ~10 s
    teacher = OpenAITeacher(url, "m", make_teacher(url).task, timeout=0.5, max_retries=1, backoff_base=0.01)
    start = time.monotonic()
    with pytest.raises(TeacherError, match=r"gave up after 2 attempts \(no complete answer within the timeout"):
        teacher.generate(make_problems(1))
    assert time.monotonic() - start < 3.0 and server.requests == 2


def wait_after_429(loop: BackgroundLoop, retry_after: str, max_retry_after: float) -> float:
    """Seconds between a request answered 429 with this Retry-After and its retry (backoff capped at 50 ms)."""
    url, server = serve(loop, first_then_ok(lambda body: (429, {"error": "slow down"}, {"Retry-After": retry_after})))
    OpenAITeacher(url, "m", make_teacher(url).task, backoff_base=0.01, backoff_cap=0.05,
                  max_retry_after=max_retry_after).generate(make_problems(1))
    (first, _), (second, _) = server.seen
    return second - first


def test_retry_after_is_honoured_past_the_backoff_cap_up_to_its_maximum(loop):
    assert backoff_delay(0, 0.5, 4.0, retry_after=20.0) == 20.0
    assert backoff_delay(0, 0.5, 4.0, retry_after=1e9, max_retry_after=300.0) == 300.0
    assert 28 < _retry_after(formatdate(time.time() + 30, usegmt=True)) <= 30
    assert _retry_after("soon") is None and _retry_after(None) is None
    assert wait_after_429(loop, "1", max_retry_after=5) >= 0.95
    assert 0.15 <= wait_after_429(loop, "3600", max_retry_after=0.2) < 2.0
    with pytest.raises(UserError, match="max_retry_after >= 0"):
        OpenAITeacher("http://127.0.0.1/v1", "m", make_teacher("http://127.0.0.1/v1").task, max_retry_after=-1)


def test_api_key_goes_only_over_https_or_to_this_machine(loop, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    url, server = serve(loop)
    make_teacher(url).generate(make_problems(1))
    assert server.seen[0][1]["authorization"] == "Bearer sk-secret"

    task = make_teacher(url).task
    for ok in ("https://api.deepseek.com/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1",
               "http://127.0.0.2/v1"):
        assert OpenAITeacher(ok, "m", task).client.auth_headers() == {"Authorization": "Bearer sk-secret"}
    remote = OpenAITeacher("http://192.0.2.1:8000/v1", "m", task, max_retries=0, timeout=0.5)
    with pytest.raises(UserError, match=r"refusing to send the API key \(\$OPENAI_API_KEY\) over plain http to "
                                        r"192\.0\.2\.1.*allow_insecure_key") as caught:
        remote.generate(make_problems(1))
    assert not isinstance(caught.value, TeacherError) and "sk-secret" not in str(caught.value)
    trusted = OpenAITeacher("http://192.0.2.1:8000/v1", "m", task, allow_insecure_key=True)
    assert trusted.client.auth_headers() == {"Authorization": "Bearer sk-secret"}
    monkeypatch.delenv("OPENAI_API_KEY")
    assert remote.client.auth_headers() == {}  # no key, nothing to leak
    with pytest.raises(UserError, match="base_url must start with https://"):
        OpenAITeacher("api.deepseek.com/v1", "m", task)
