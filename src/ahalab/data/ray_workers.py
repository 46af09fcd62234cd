"""Teacher sampling as a Ray job: workers make the traces, the driver alone writes the resumable cache.

``RayTeacher`` starts ``workers`` Ray actors, each building the same teacher from one picklable ``build``
callable (for an engine teacher: its own engine, from the same model, dtype and seed). The driver asks a
worker for the teacher's name and settings, so traces are keyed exactly as in a single-process run, and for
``Teacher.chunks(todo)``; then it keeps one chunk in flight per worker and hands each finished chunk's traces
to ``Teacher.generate``'s ``emit``, which appends them to traces.jsonl (fsynced) and drops any key it
already holds. A chunk's traces depend only on the chunk and its index (an engine teacher seeds it with
``seed + index``), never on the worker that makes it, so deterministic teachers give the single-process
rows, row for row.

A worker that dies (killed, out of memory, its node lost) takes only its in-flight chunk with it: the chunk
goes back to the front of the queue for any live worker, and the actor restarts (building its teacher again)
up to ``RESTARTS`` times; a cheap probe tells a restarted worker from one gone for good. A chunk lost
``ATTEMPTS`` times, or left with no worker, becomes failures for ``generate`` to report (a TeacherError after
the other traces are cached). Errors raised inside a worker's teacher (a UserError, an engine error) end the
run as they would in one process. ``close`` ends the actors (and Ray, if this teacher started it).

Why actors and not Ray Data with vLLM: the cache is an append-only file the driver owns and resume is "skip
the keys it holds", so the job is a queue of chunks with results streamed back to one writer; actors holding
an ahalab teacher run program teachers, HF and vLLM engines through the same ``sampling.sample`` path, and
the chunks (hence the seeds) are ahalab's, where Ray Data's blocks, their retries and their writers are its own.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ahalab.data.teachers import Emit, Key, Teacher, Trace
from ahalab.errors import UserError
from ahalab.types import Problem

log = logging.getLogger(__name__)
RESTARTS = 3  # times a dead worker's actor is started again
ATTEMPTS = 3  # times a chunk is tried before its traces count as failed
PROBE_EVERY = 0.5  # seconds between probes of a worker that lost its chunk, until it is back or known dead
Chunk = list[tuple[Problem, int]]


class TeacherWorker:
    """The Ray actor: one teacher, built in the worker process."""

    def __init__(self, build: Callable[[], Teacher]) -> None:
        from ahalab.logs import configure

        configure()  # the engines' and libraries' logs held back, as in the driver
        self.error: UserError | None = None
        try:
            self.teacher = build()
        except UserError as e:  # a setting the teacher refuses: raised by ``identity``, for the driver to report
            self.error = e

    def pid(self) -> int:
        return os.getpid()

    def identity(self) -> tuple[str, str]:
        """What keys the cache: the teacher's name and settings (as JSON, to compare workers by)."""
        if self.error is not None:
            raise self.error
        return self.teacher.name, json.dumps(self.teacher.settings(), sort_keys=True, default=str)

    def chunks(self, todo: Chunk) -> list[Chunk]:
        return self.teacher.chunks(todo)

    def produce(self, index: int, chunk: Chunk) -> tuple[list[Trace], list[tuple[Key, str]]]:
        """Chunk ``index``'s traces and failures, returned whole (a worker killed midway returns nothing)."""
        traces: list[Trace] = []
        failures = self.teacher.produce_chunk(index, chunk, traces.append)
        return traces, failures


class RayTeacher(Teacher):
    """The teacher ``build`` makes, run on ``workers`` Ray actors (see the module doc).

    ``worker_options`` go to each actor (Ray resources: ``num_cpus``, default 1, ``num_gpus``, ...); ``address``
    is the Ray cluster to join when Ray is not running in this process yet (None: ``$RAY_ADDRESS`` or a new
    local Ray).
    """

    def __init__(self, build: Callable[[], Teacher], workers: int, worker_options: dict[str, Any] | None = None,
                 address: str | None = None) -> None:
        import ray

        from ahalab.logs import level

        self.started_ray = not ray.is_initialized()
        if self.started_ray:  # Ray's own logs at the libraries' level (ERROR unless ahalab -v)
            ray.init(address=address, include_dashboard=False, logging_level=level())
        actor = ray.remote(TeacherWorker).options(max_restarts=RESTARTS, max_task_retries=0,
                                                  **{"num_cpus": 1, **(worker_options or {})})
        self.workers = [actor.remote(build) for _ in range(workers)]
        self.retried = 0  # chunks handed out again after their worker died
        try:  # every worker built, or its error raised here
            identities = set(ray.get([w.identity.remote() for w in self.workers]))
        except BaseException as e:
            self.close()
            cause = getattr(e, "cause", None)  # a UserError in the worker: reported as one process reports it
            if isinstance(cause, UserError):
                raise cause from None
            raise
        if len(identities) > 1:
            self.close()
            raise UserError(f"the Ray workers built different teachers (other model files on other nodes?): "
                            f"{sorted(identities)}")
        (self.name, settings), = identities
        self._settings = json.loads(settings)
        log.info("ray: %d workers for %s", workers, self.name)

    def settings(self) -> dict[str, Any]:
        return self._settings

    def chunks(self, todo: Chunk) -> list[Chunk]:
        import ray

        return ray.get(self.workers[0].chunks.remote(todo))

    def _produce(self, todo: Chunk, emit: Emit) -> list[tuple[Key, str]]:
        import ray
        from ray.exceptions import ActorDiedError, RayActorError

        chunks = self.chunks(todo)
        queue = deque(range(len(chunks)))
        attempts = [0] * len(chunks)
        idle = list(self.workers)
        running: dict[Any, tuple[Any, int]] = {}  # chunk ref -> (worker, chunk index)
        probes: dict[Any, Any] = {}  # probe ref -> a worker that lost its chunk: back when it answers
        resting: list[tuple[float, Any]] = []  # (when, worker) to probe again: unavailable, not known dead
        failures: list[tuple[Key, str]] = []

        def hand_out() -> None:
            now = time.monotonic()
            for when, worker in [r for r in resting if r[0] <= now]:
                resting.remove((when, worker))
                probes[worker.pid.remote()] = worker
            while queue and idle:
                worker, index = idle.pop(0), queue.popleft()
                attempts[index] += 1
                running[worker.produce.remote(index, chunks[index])] = (worker, index)

        hand_out()
        while running or (queue and (probes or resting)):
            wait = max(0.0, min(w for w, _ in resting) - time.monotonic()) if resting else None
            ready: list[Any] = []
            if running or probes:
                ready, _ = ray.wait([*running, *probes], num_returns=1, timeout=wait)
            else:
                time.sleep(wait)
            for ref in ready:
                if ref in probes:
                    worker = probes.pop(ref)
                    try:
                        ray.get(ref)
                        idle.append(worker)
                    except ActorDiedError:  # dead for good: no restart left, or ray.kill'ed
                        pass
                    except RayActorError:  # unavailable: restarting, most likely
                        resting.append((time.monotonic() + PROBE_EVERY, worker))
                    continue
                worker, index = running.pop(ref)
                try:
                    traces, failed = ray.get(ref)
                except RayActorError as e:  # its chunk is lost: again, first, unless it was tried enough
                    if attempts[index] < ATTEMPTS:
                        queue.appendleft(index)
                        self.retried += 1
                        log.warning("ray: a worker died on chunk %d (%s); it goes to the next free worker",
                                    index, type(e).__name__)
                    else:
                        failures += [((p.id, s), f"its worker died {ATTEMPTS} times ({e})") for p, s in chunks[index]]
                    resting.append((time.monotonic(), worker))  # probed at once: restarted, restarting or dead
                    continue
                idle.append(worker)
                hand_out()  # the next chunk first: workers are busy while the driver writes
                for trace in traces:
                    emit(trace)
                failures += failed
            hand_out()
        failures += [((p.id, s), "no Ray worker left") for index in queue for p, s in chunks[index]]
        return failures

    def close(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []
        if self.started_ray:
            ray.shutdown()
