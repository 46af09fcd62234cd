"""Teachers: problems in, reasoning traces out, through a resumable on-disk cache.

Every teacher has the same entry point, ``Teacher.generate(problems, samples, cache=...)``, which
returns one ``Trace`` per (problem, sample index) in problem order. With a cache file, each trace is
appended (and fsynced) as soon as it exists, keyed by (teacher, problem id, sample index); a
restarted job reads the file, skips the keys it holds and produces only the rest, so a job killed at
any point (kill -9 included: a torn last line is cut off on the next start) ends with exactly one
row per key.

Teachers here: ``OpenAITeacher`` (any OpenAI-compatible chat endpoint: DeepSeek's API, ``vllm
serve``, ...), ``EngineTeacher`` (a local model through an ahalab Engine; the model is its own
teacher for STaR-style self-distillation); program teachers live in ``ahalab.data.programs``.
"""
from __future__ import annotations

import asyncio
import os
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ahalab.errors import UserError
from ahalab.runs import append_jsonl, iter_jsonl
from ahalab.tasks.base import Task
from ahalab.types import Problem

if TYPE_CHECKING:
    from ahalab.engines.base import Engine

Key = tuple[str, int]  # (problem id, sample index) within one teacher
Emit = Callable[["Trace"], None]
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class TeacherError(UserError, RuntimeError):
    """A teacher could not produce some traces; the ones it did produce are in the cache."""


@dataclass
class Trace:
    """One teacher answer to one problem: the answer text and, where the API gives it apart, the reasoning."""

    teacher: str
    problem_id: str
    sample: int
    text: str  # the assistant message (for engines: the prompt's assistant prefix + the completion)
    reasoning: str | None = None  # a separate ``reasoning_content`` field (DeepSeek-R1 API, vLLM reasoning parsers)
    finish_reason: str = "stop"
    tokens: int | None = None  # completion tokens, where the teacher knows them

    @property
    def key(self) -> Key:
        return self.problem_id, self.sample

    def full_text(self) -> str:
        """What a grader or filter should see: a separate reasoning put back inside ``<think>`` tags first."""
        return f"<think>{self.reasoning}</think>\n{self.text}" if self.reasoning else self.text


class TraceCache:
    """A JSONL file of traces, appended and fsynced one completed trace at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self, teacher: str) -> dict[Key, Trace]:
        """This teacher's traces by key (the first row wins if a key repeats); cuts off a torn last line."""
        if not self.path.exists():
            return {}
        self._cut_torn_tail()
        done: dict[Key, Trace] = {}
        for _, row in iter_jsonl(self.path):
            if row.get("teacher") == teacher:
                trace = Trace(**row)
                done.setdefault(trace.key, trace)
        return done

    def append(self, trace: Trace) -> None:
        append_jsonl(self.path, [asdict(trace)])

    def _cut_torn_tail(self) -> None:
        """Truncate an unterminated last line (a kill mid-append), so the next append starts a clean line."""
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())


class Teacher(ABC):
    """Problems in, traces out. Subclasses set ``name`` and implement ``_produce``."""

    name: str = ""

    def generate(self, problems: list[Problem], samples: int = 1, cache: str | Path | None = None) -> list[Trace]:
        """``samples`` traces per problem, in (problem, sample) order; with ``cache``, resumable (see module doc).

        Raises TeacherError after all other work is done if some traces could not be produced; the
        produced ones are cached, so running again retries only the missing ones.
        """
        if samples < 1:
            raise UserError(f"samples must be >= 1 (got {samples})")
        if len({p.id for p in problems}) < len(problems):
            raise UserError("problem ids must be unique: the trace cache is keyed by them")
        store = TraceCache(cache) if cache is not None else None
        done = store.load(self.name) if store else {}
        todo = [(p, i) for p in problems for i in range(samples) if (p.id, i) not in done]

        def emit(trace: Trace) -> None:
            if trace.key not in done:
                done[trace.key] = trace
                if store:
                    store.append(trace)

        if todo:
            failures = self._produce(todo, emit)
            if failures:
                (pid, sample), error = failures[0]
                raise TeacherError(f"teacher {self.name}: {len(failures)} of {len(todo)} traces failed (first: "
                                   f"problem {pid} sample {sample}: {error}); the others are "
                                   f"{'cached in ' + str(cache) + ', run again to retry' if cache else 'lost'}")
        return [done[(p.id, i)] for p in problems for i in range(samples)]

    @abstractmethod
    def _produce(self, todo: list[tuple[Problem, int]], emit: Emit) -> list[tuple[Key, str]]:
        """Make a trace for each (problem, sample) in ``todo``, calling ``emit`` as each one is ready.

        Returns the failures as (key, error message); an empty list when all succeeded.
        """


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)], at least ``retry_after``."""
    delay = (rng or random).uniform(0.0, min(cap, base * 2 ** attempt))
    return max(delay, min(retry_after, cap)) if retry_after is not None else delay


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: fall back to the backoff
        return None


class OpenAITeacher(Teacher):
    """Any OpenAI-compatible ``/chat/completions`` endpoint, called asynchronously with httpx.

    One request per (problem, sample), at most ``concurrency`` at a time, each with ``timeout``
    seconds; 408/409/425/429/5xx answers, connection errors, timeouts and unreadable bodies are
    retried up to ``max_retries`` times with exponential backoff and full jitter (honouring a
    ``Retry-After`` header). Request ``seed`` is ``seed + sample``, so an endpoint that honours seeds
    (vLLM does) answers a retried or resumed request as it would have the first time. A separate
    reasoning field (``reasoning_content``, or vLLM's ``reasoning``) is kept in ``Trace.reasoning``.
    The API key is read from the environment variable named ``api_key_env`` (none is sent if unset).
    """

    def __init__(self, base_url: str, model: str, task: Task, fmt: str = "r1", name: str | None = None,
                 temperature: float = 0.7, top_p: float = 1.0, max_tokens: int = 2048, concurrency: int = 16,
                 timeout: float = 120.0, max_retries: int = 8, backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 seed: int = 0, api_key_env: str = "OPENAI_API_KEY", extra_body: dict[str, Any] | None = None) -> None:
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise UserError("OpenAITeacher needs concurrency >= 1, max_retries >= 0 and timeout > 0")
        self.base_url = base_url.rstrip("/")
        self.model, self.task, self.fmt = model, task, fmt
        self.name = name or f"openai:{model}"
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
        self.backoff_base, self.backoff_cap, self.seed = backoff_base, backoff_cap, seed
        self.api_key_env, self.extra_body = api_key_env, extra_body or {}

    def request_body(self, problem: Problem, sample: int) -> dict[str, Any]:
        from ahalab.prompts import build_messages

        messages, _ = build_messages(problem.question, self.fmt, self.task.answer_hint, assistant_prefix=False)
        return {"model": self.model, "messages": messages, "temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "seed": self.seed + sample, "n": 1, **self.extra_body}

    def _produce(self, todo: list[tuple[Problem, int]], emit: Emit) -> list[tuple[Key, str]]:
        return asyncio.run(self._produce_async(todo, emit))

    async def _produce_async(self, todo: list[tuple[Problem, int]], emit: Emit) -> list[tuple[Key, str]]:
        import httpx

        key = os.environ.get(self.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        gate = asyncio.Semaphore(self.concurrency)
        failures: list[tuple[Key, str]] = []

        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, limits=limits, timeout=timeout) as client:
            async def one(problem: Problem, sample: int) -> None:
                try:
                    emit(await self._request(client, gate, problem, sample))
                except TeacherError as e:
                    failures.append(((problem.id, sample), str(e)))

            await asyncio.gather(*(one(p, i) for p, i in todo))
        return failures

    async def _request(self, client: Any, gate: asyncio.Semaphore, problem: Problem, sample: int) -> Trace:
        """One trace, retried on transient failures; TeacherError when it cannot be had."""
        import httpx

        body = self.request_body(problem, sample)
        error = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                async with gate:
                    response = await client.post("/chat/completions", json=body)
                if response.status_code == 200:
                    return self._trace(problem, sample, response.json())
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRY_STATUS:
                    raise TeacherError(error)
                retry_after = _retry_after(response.headers.get("retry-after"))
            except (httpx.RequestError, ValueError) as e:  # connection, timeout, torn or non-JSON body
                error = f"{type(e).__name__}: {e}"
            if attempt < self.max_retries:
                await asyncio.sleep(backoff_delay(attempt, self.backoff_base, self.backoff_cap, retry_after))
        raise TeacherError(f"gave up after {self.max_retries + 1} attempts ({error})")

    def _trace(self, problem: Problem, sample: int, data: Any) -> Trace:
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise TeacherError(f"unexpected response shape: {str(data)[:200]}") from None
        reasoning = message.get("reasoning_content") or message.get("reasoning") or None
        usage = data.get("usage") or {}
        return Trace(teacher=self.name, problem_id=problem.id, sample=sample, text=message.get("content") or "",
                     reasoning=reasoning, finish_reason=choice.get("finish_reason") or "stop",
                     tokens=usage.get("completion_tokens"))


class EngineTeacher(Teacher):
    """A local model through an ahalab Engine (vLLM or HF): sampled traces in the prompt format ``fmt``.

    Problems go in chunks of ``chunk_size``; all ``samples`` of a chunk come from one ``generate``
    call seeded with ``seed + chunk index``, and each finished chunk is cached before the next starts.
    """

    def __init__(self, engine: Engine, task: Task, fmt: str = "r1", name: str | None = None, temperature: float = 0.8,
                 top_p: float = 1.0, max_tokens: int = 512, chunk_size: int = 64, seed: int = 0) -> None:
        self.engine, self.task, self.fmt = engine, task, fmt
        self.name = name or f"engine:{Path(engine.model_dir).name}"
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.chunk_size, self.seed = chunk_size, seed

    def _produce(self, todo: list[tuple[Problem, int]], emit: Emit) -> list[tuple[Key, str]]:
        from ahalab.sampling import sample

        missing: dict[str, set[int]] = {}
        problems: list[Problem] = []
        for problem, index in todo:
            if problem.id not in missing:
                missing[problem.id] = set()
                problems.append(problem)
            missing[problem.id].add(index)
        for ci, lo in enumerate(range(0, len(problems), self.chunk_size)):
            chunk = problems[lo:lo + self.chunk_size]
            n = max(max(missing[p.id]) for p in chunk) + 1
            groups = sample(self.engine, self.task, chunk, self.fmt, n=n, temperature=self.temperature,
                            top_p=self.top_p, max_tokens=self.max_tokens, seed=self.seed + ci, chunk_size=len(chunk))
            for problem, group in zip(chunk, groups):
                for s in (group[i] for i in sorted(missing[problem.id])):
                    emit(Trace(teacher=self.name, problem_id=problem.id, sample=s.index, text=s.text,
                               finish_reason=s.finish_reason, tokens=s.tokens))
        return []
