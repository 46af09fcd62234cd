"""Test helpers for the OpenAI-compatible teacher client: a deterministic fake server, a fault-injecting
proxy (in a background event loop), and a generation job to run (and kill -9) as a subprocess.

    python tests/openai_fakes.py job --url URL --cache PATH --problems 20 --samples 3
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

FAULTS = ("drop", "status500", "status429", "delay", "truncate", "bad_json")
# A scripted answer to the n-th request (1-based) with this JSON body: (status, JSON reply, extra headers).
Script = Callable[[int, dict[str, Any]], tuple[int, Any, dict[str, str]]]


class BackgroundLoop:
    """An asyncio loop in a daemon thread, for servers that live beside a synchronous test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        """Cancel what is still running (a trickling answer, say), then stop the loop."""
        async def cancel_all() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def fake_reply(body: dict[str, Any], reasoning: bool) -> dict[str, Any]:
    """A chat completion that depends only on the messages and the seed (so retries and restarts agree)."""
    digest = hashlib.sha256(json.dumps([body["messages"], body.get("seed")], sort_keys=True).encode()).hexdigest()
    value = int(digest[:6], 16) % 100
    thought = f"Thinking about it ({digest[:12]}), the value is {value}."
    message = {"role": "assistant", "content": f"<answer>{value}</answer>"}
    if reasoning:
        message["reasoning_content"] = thought
    else:
        message["content"] = f"<think>{thought}</think>\n<answer>{value}</answer>"
    return {"id": digest[:16], "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22}}


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0], headers, body


def _response(status: int, body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n").encode() + body


class FakeOpenAIServer:
    """``POST /v1/chat/completions`` answered after ``delay`` seconds with ``fake_reply`` (or what ``script``
    says); counts requests and records each one's (arrival time, headers) in ``seen``. ``trickle``: send the
    answer one byte at a time, that many seconds apart (a server that is slow but never silent)."""

    def __init__(self, delay: float = 0.0, reasoning: bool = False, script: Script | None = None,
                 trickle: float = 0.0) -> None:
        self.delay, self.reasoning, self.script, self.trickle = delay, reasoning, script, trickle
        self.requests = 0
        self.seen: list[tuple[float, dict[str, str]]] = []
        self.port = 0

    async def start(self) -> int:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            start, headers, body = await _read_request(reader)
            self.requests += 1
            self.seen.append((time.monotonic(), headers))
            await asyncio.sleep(self.delay)
            if " /v1/chat/completions " not in start:
                status, reply, extra = 404, {"error": "not found"}, {}
            elif self.script:
                status, reply, extra = self.script(self.requests, json.loads(body))
            else:
                status, reply, extra = 200, fake_reply(json.loads(body), self.reasoning), {}
            data = _response(status, json.dumps(reply).encode(), "".join(f"{k}: {v}\r\n" for k, v in extra.items()))
            step = 1 if self.trickle else len(data)
            for i in range(0, len(data), step):
                writer.write(data[i:i + step])
                await writer.drain()
                await asyncio.sleep(self.trickle)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):  # client gone, or loop stopping
            pass
        finally:
            writer.close()


class FaultProxy:
    """Forwards HTTP requests to ``upstream`` ("127.0.0.1:port"), injecting a fault into a share of them.

    Faults (chosen with a seeded generator): drop the connection without an answer, answer 500, answer
    429 (with Retry-After: 0), delay ``slow`` seconds before forwarding, forward but cut the body short,
    forward a 200 whose body is not JSON. ``counts`` records what happened.
    """

    def __init__(self, upstream: str, fault_rate: float = 0.4, slow: float = 0.2, seed: int = 0) -> None:
        self.upstream, self.fault_rate, self.slow = upstream, fault_rate, slow
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.port = 0

    async def start(self) -> int:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def _forward(self, start: str, headers: dict[str, str], body: bytes) -> bytes:
        host, port = self.upstream.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        keep = {k: v for k, v in headers.items() if k not in ("host", "connection", "content-length")}
        head = "".join(f"{k}: {v}\r\n" for k, v in keep.items())
        writer.write(f"{start}\r\nHost: {self.upstream}\r\n{head}Content-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            start, headers, body = await _read_request(reader)
            fault = self.rng.choice(FAULTS) if self.rng.random() < self.fault_rate else "none"
            self.counts[fault] += 1
            if fault == "drop":
                writer.transport.abort()
                return
            if fault in ("status500", "status429"):
                extra = "Retry-After: 0\r\n" if fault == "status429" else ""
                writer.write(_response(429 if fault == "status429" else 500, b'{"error": "injected"}', extra))
            else:
                if fault == "delay":
                    await asyncio.sleep(self.slow)
                data = await self._forward(start, headers, body)
                if fault == "truncate":
                    data = data[:len(data) - max(1, (len(data) - data.find(b"\r\n\r\n")) // 2)]
                elif fault == "bad_json":
                    data = _response(200, b'{"choices": [')
                writer.write(data)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):  # client gone, or loop stopping
            pass
        finally:
            writer.close()


def make_problems(count: int) -> list:
    from ahalab.tasks import get_task

    return get_task("arithmetic", level=2).load(limit=count, seed=7)


def make_teacher(url: str, concurrency: int = 4, max_tokens: int = 64, model: str = "fake-model", **options):
    from ahalab.data.teachers import OpenAITeacher
    from ahalab.tasks import get_task

    return OpenAITeacher(url, model, get_task("arithmetic"), concurrency=concurrency, timeout=30.0,
                         max_retries=30, backoff_base=0.01, backoff_cap=0.2, max_tokens=max_tokens, **options)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["job"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    teacher = make_teacher(args.url, max_tokens=args.max_tokens)
    traces = teacher.generate(make_problems(args.problems), samples=args.samples, cache=args.cache)
    print(json.dumps({"traces": len(traces)}))


if __name__ == "__main__":
    main()
