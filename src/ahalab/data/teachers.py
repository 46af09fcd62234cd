"""Teachers: problems in, reasoning traces out, through a resumable on-disk cache.

Every teacher has the same entry point, ``Teacher.generate(problems, samples, cache=...)``, which
returns one ``Trace`` per (problem, sample index) in problem order. With a cache file, each trace is
appended (and fsynced) as soon as it exists, keyed by content: a digest of the question (and the
problem's metadata), the teacher and every setting that shapes its answer (prompt format, sampling
settings, the teacher model: for a local model, its weights), plus the sample index. A restarted job
reads the file, skips the keys it holds and produces only the rest, so a job killed at any point
(kill -9 included: a torn last line is cut off on the next start) ends with exactly one row per key;
an output folder reused with another file or other settings never hands back traces written for other
questions (problem ids of file tasks are row numbers, so ids alone cannot tell).

``chunks`` and ``produce_chunk`` cut the work into units whose traces depend only on the unit and its
index, which ``ahalab.data.ray_workers.RayTeacher`` hands to Ray workers (the driver alone writes the cache).

Teachers here: ``OpenAITeacher`` (any OpenAI-compatible chat endpoint: DeepSeek's API, ``vllm
serve``, ...), ``EngineTeacher`` (a local model through an ahalab Engine; the model is its own
teacher for STaR-style self-distillation); program teachers live in ``ahalab.data.programs``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ahalab.engines.http import OpenAIClient
from ahalab.errors import UserError
from ahalab.runs import append_jsonl, iter_jsonl
from ahalab.tasks.base import Task
from ahalab.types import Problem

if TYPE_CHECKING:
    from ahalab.engines.base import Engine

Key = tuple[str, int]  # (problem id, sample index): what a teacher's _produce reports failures by
Emit = Callable[["Trace"], None]
CHUNK_ITEMS = 256  # (problem, sample) pairs per unit of work, for teachers without chunks of their own


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
    question: str = ""  # the question it answers (checked again before it becomes a training row)
    content_key: str = ""  # digest of question, teacher and settings (see the module doc)

    @property
    def key(self) -> tuple[str, int]:
        return self.content_key, self.sample

    def full_text(self) -> str:
        """What a grader or filter should see: a separate reasoning put back inside ``<think>`` tags first."""
        return f"<think>{self.reasoning}</think>\n{self.text}" if self.reasoning else self.text


class TraceCache:
    """A JSONL file of traces, appended and fsynced one completed trace at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[tuple[str, int], Trace]:
        """Traces by (content key, sample); the first row wins if a key repeats; rows without a content key
        (older caches) are ignored; cuts off a torn last line."""
        if not self.path.exists():
            return {}
        self._cut_torn_tail()
        fields = {f.name for f in dataclasses.fields(Trace)}
        done: dict[tuple[str, int], Trace] = {}
        for _, row in iter_jsonl(self.path):
            if row.get("content_key") and set(row) <= fields:
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
    """Problems in, traces out. Subclasses set ``name`` and implement ``_produce``; ``SETTINGS`` names the
    attributes that shape a trace (they key the cache)."""

    name: str = ""
    SETTINGS: tuple[str, ...] = ()

    def settings(self) -> dict[str, Any]:
        """What, besides the question, decides this teacher's answers."""
        return {k: getattr(self, k) for k in self.SETTINGS}

    def content_key(self, problem: Problem) -> str:
        blob = json.dumps({"question": problem.question, "meta": problem.meta, "teacher": self.name,
                           "settings": self.settings()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

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
        done = store.load() if store else {}
        keys = {p.id: self.content_key(p) for p in problems}
        by_id = {p.id: p for p in problems}
        todo = [(p, i) for p in problems for i in range(samples) if (keys[p.id], i) not in done]

        def emit(trace: Trace) -> None:
            trace = dataclasses.replace(trace, question=by_id[trace.problem_id].question,
                                        content_key=keys[trace.problem_id])
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
        return [dataclasses.replace(done[(keys[p.id], i)], problem_id=p.id) for p in problems for i in range(samples)]

    @abstractmethod
    def _produce(self, todo: list[tuple[Problem, int]], emit: Emit) -> list[tuple[Key, str]]:
        """Make a trace for each (problem, sample) in ``todo``, calling ``emit`` as each one is ready.

        Returns the failures as (key, error message); an empty list when all succeeded.
        """

    def chunks(self, todo: list[tuple[Problem, int]]) -> list[list[tuple[Problem, int]]]:
        """``todo`` in units of work that ``produce_chunk`` makes independently, anywhere, in any order."""
        return [todo[lo:lo + CHUNK_ITEMS] for lo in range(0, len(todo), CHUNK_ITEMS)]

    def produce_chunk(self, index: int, chunk: list[tuple[Problem, int]], emit: Emit) -> list[tuple[Key, str]]:
        """``_produce`` for unit ``index`` of ``chunks(todo)``: its traces depend only on the unit and ``index``."""
        return self._produce(chunk, emit)

    def close(self) -> None:
        """Release what the teacher holds (an engine, workers); a no-op for most."""


class OpenAITeacher(Teacher):
    """Any OpenAI-compatible ``/chat/completions`` endpoint, through ``ahalab.engines.http.OpenAIClient``.

    One request per (problem, sample), at most ``concurrency`` at a time; ``timeout``, the retries
    (``max_retries``, ``backoff_base``, ``backoff_cap``, ``max_retry_after``) and the API key (``api_key_env``,
    ``allow_insecure_key``) are the client's (see there). 200 answers that are no usable chat completion
    (unreadable JSON, ``"message": null``, ...) are retried like transient errors. Traces that still fail are
    reported by ``generate`` (a TeacherError, after the others are cached). Request ``seed`` is ``seed + sample``,
    so an endpoint that honours seeds (vLLM does) answers a retried or resumed request as it would have the first
    time. ``content`` given as a list of parts is joined into text; a separate reasoning field
    (``reasoning_content``, or vLLM's ``reasoning``) is kept in ``Trace.reasoning``.
    """

    SETTINGS = ("base_url", "model", "fmt", "temperature", "top_p", "max_tokens", "seed", "extra_body")

    def __init__(self, base_url: str, model: str, task: Task, fmt: str = "r1", name: str | None = None,
                 temperature: float = 0.7, top_p: float = 1.0, max_tokens: int = 2048, concurrency: int = 16,
                 timeout: float = 120.0, max_retries: int = 8, backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 seed: int = 0, api_key_env: str = "OPENAI_API_KEY", extra_body: dict[str, Any] | None = None,
                 allow_insecure_key: bool = False, max_retry_after: float = 300.0) -> None:
        self.client = OpenAIClient(base_url, concurrency=concurrency, timeout=timeout, max_retries=max_retries,
                                   backoff_base=backoff_base, backoff_cap=backoff_cap, max_retry_after=max_retry_after,
                                   api_key_env=api_key_env, allow_insecure_key=allow_insecure_key)
        self.base_url = self.client.base_url
        self.model, self.task, self.fmt = model, task, fmt
        self.name = name or f"openai:{model}"
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.seed, self.extra_body = seed, extra_body or {}

    def request_body(self, problem: Problem, sample: int) -> dict[str, Any]:
        from ahalab.prompts import build_messages

        messages, _ = build_messages(problem.question, self.fmt, self.task.answer_hint, assistant_prefix=False)
        return {"model": self.model, "messages": messages, "temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "seed": self.seed + sample, "n": 1, **self.extra_body}

    def _produce(self, todo: list[tuple[Problem, int]], emit: Emit) -> list[tuple[Key, str]]:
        failures = self.client.request_all("/chat/completions", [self.request_body(p, i) for p, i in todo],
                                        lambda i, data: self._trace(*todo[i], data), lambda _, trace: emit(trace))
        return [((todo[i][0].id, todo[i][1]), error) for i, error in failures]

    def _trace(self, problem: Problem, sample: int, data: Any) -> Trace:
        """The trace in a chat completion; ValueError naming what makes it unusable (so it is retried)."""
        choices = data.get("choices") if isinstance(data, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            got = json.dumps(message)[:50] if isinstance(choice, dict) and "message" in choice else "missing"
            raise ValueError(f"not a chat completion: choices[0].message is {got} (response: {str(data)[:200]})")
        usage = data.get("usage")
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        return Trace(teacher=self.name, problem_id=problem.id, sample=sample, text=self._text(message, "content"),
                     reasoning=self._text(message, "reasoning_content") or self._text(message, "reasoning") or None,
                     finish_reason=choice.get("finish_reason") or "stop",
                     tokens=tokens if isinstance(tokens, int) else None)

    @staticmethod
    def _text(message: dict[str, Any], name: str) -> str:
        """Field ``name`` of a message as text: a string, null (""), or content parts (their text joined)."""
        value = message.get(name)
        if value is None or isinstance(value, str):
            return value or ""
        if isinstance(value, list) and all(isinstance(p, (str, dict)) for p in value):
            texts = [p if isinstance(p, str) else p.get("text") for p in value
                     if isinstance(p, str) or p.get("type", "text") == "text"]
            if all(isinstance(t, str) for t in texts):
                return "".join(texts)
        raise ValueError(f"not a chat completion: message.{name} is not text ({json.dumps(value)[:100]})")


class EngineTeacher(Teacher):
    """A local model through an ahalab Engine (vLLM or HF): sampled traces in the prompt format ``fmt``.

    Problems go in chunks of ``chunk_size``; all ``samples`` of a chunk come from one ``generate``
    call seeded with ``seed + chunk index``, and each finished chunk is cached before the next starts.
    """

    SETTINGS = ("fmt", "temperature", "top_p", "max_tokens", "chunk_size", "seed")

    def __init__(self, engine: Engine, task: Task, fmt: str = "r1", name: str | None = None, temperature: float = 0.8,
                 top_p: float = 1.0, max_tokens: int = 512, chunk_size: int = 64, seed: int = 0) -> None:
        self.engine, self.task, self.fmt = engine, task, fmt
        self.name = name or f"engine:{Path(engine.model_dir).name}"
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.chunk_size, self.seed = chunk_size, seed

    def settings(self) -> dict[str, Any]:
        from ahalab.runs import content_digest

        weights = sorted(Path(self.engine.model_dir).glob("*.safetensors"))
        return {**super().settings(), "engine": self.engine.name,
                "weights": [content_digest(w) for w in weights] or str(self.engine.model_dir)}

    def close(self) -> None:
        """Closes the engine: for whoever made it."""
        self.engine.close()

    def chunks(self, todo: list[tuple[Problem, int]]) -> list[list[tuple[Problem, int]]]:
        """All missing samples of ``chunk_size`` problems at a time, in problem order."""
        by_problem: dict[str, list[tuple[Problem, int]]] = {}
        for problem, index in todo:
            by_problem.setdefault(problem.id, []).append((problem, index))
        groups = list(by_problem.values())
        return [[item for group in groups[lo:lo + self.chunk_size] for item in group]
                for lo in range(0, len(groups), self.chunk_size)]

    def produce_chunk(self, index: int, chunk: list[tuple[Problem, int]], emit: Emit) -> list[tuple[Key, str]]:
        """One ``generate`` call for the chunk's problems, all their samples, seeded with ``seed + index``."""
        from ahalab.sampling import sample

        missing: dict[str, set[int]] = {}
        problems: list[Problem] = []
        for problem, i in chunk:
            if problem.id not in missing:
                missing[problem.id] = set()
                problems.append(problem)
            missing[problem.id].add(i)
        n = max(max(indices) for indices in missing.values()) + 1
        groups = sample(self.engine, self.task, problems, self.fmt, n=n, temperature=self.temperature,
                        top_p=self.top_p, max_tokens=self.max_tokens, seed=self.seed + index, chunk_size=len(problems))
        for problem, group in zip(problems, groups):
            for s in (group[i] for i in sorted(missing[problem.id])):
                emit(Trace(teacher=self.name, problem_id=problem.id, sample=s.index, text=s.text,
                           finish_reason=s.finish_reason, tokens=s.tokens))
        return []

    def _produce(self, todo: list[tuple[Problem, int]], emit: Emit) -> list[tuple[Key, str]]:
        for index, chunk in enumerate(self.chunks(todo)):
            self.produce_chunk(index, chunk, emit)
        return []
