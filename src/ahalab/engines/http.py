"""OpenAIClient: JSON requests to an OpenAI-compatible server, concurrent, retried with backoff; the one HTTP client of
ahalab (the OpenAI teacher's chat completions, the vLLM server engine's completions and weight reloads)."""
from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from typing import Any, TypeVar

from ahalab.errors import UserError

T = TypeVar("T")
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class RequestError(UserError, RuntimeError):
    """A request that failed for good: an answer that is not to be retried, or every attempt used up."""


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None,
                  rng: random.Random | None = None, max_retry_after: float = float("inf")) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)], but at least
    ``retry_after`` (a server's Retry-After, honoured past ``cap`` up to ``max_retry_after``)."""
    delay = (rng or random).uniform(0.0, min(cap, base * 2 ** attempt))
    return max(delay, min(retry_after, max_retry_after)) if retry_after is not None else delay


def _retry_after(value: str | None) -> float | None:
    """The seconds a Retry-After header asks for (a number or an HTTP date); None if absent or unreadable."""
    import time
    from email.utils import parsedate_to_datetime

    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):  # neither: fall back to the backoff
        return None
    return max(0.0, when.timestamp() - time.time()) if when.tzinfo else None


class OpenAIClient:
    """Sends JSON bodies to ``base_url`` with httpx, at most ``concurrency`` at a time.

    ``timeout`` is each attempt's total deadline in seconds (connecting, sending and reading the whole answer: a
    server that trickles bytes cannot hold a request past it). 408/409/425/429/5xx answers, connection errors,
    timeouts and 200 answers the caller's ``parse`` cannot use (it raises ValueError: unreadable JSON, a missing
    field) are retried up to ``max_retries`` times with exponential backoff and full jitter, capped at
    ``backoff_cap``; a ``Retry-After`` header (seconds or an HTTP date) is honoured past that cap, up to
    ``max_retry_after`` seconds. The API key is read from the environment variable named ``api_key_env`` (none is
    sent if unset) and sent only over https or to this machine (127.0.0.1, localhost, ::1): plain http to another
    host is a UserError unless ``allow_insecure_key`` (for a network you trust).
    """

    def __init__(self, base_url: str, concurrency: int = 16, timeout: float = 120.0, max_retries: int = 8,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, max_retry_after: float = 300.0,
                 api_key_env: str = "OPENAI_API_KEY", allow_insecure_key: bool = False) -> None:
        from urllib.parse import urlsplit

        if concurrency < 1 or max_retries < 0 or timeout <= 0 or max_retry_after < 0:
            raise UserError("an OpenAI-compatible client needs concurrency >= 1, max_retries >= 0, timeout > 0 and "
                            "max_retry_after >= 0")
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise UserError(f"base_url must start with https:// or http:// (got {base_url!r})")
        self.base_url = base_url.rstrip("/")
        self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
        self.backoff_base, self.backoff_cap, self.max_retry_after = backoff_base, backoff_cap, max_retry_after
        self.api_key_env, self.allow_insecure_key = api_key_env, allow_insecure_key

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header for the key in ``api_key_env`` ({} if unset); UserError rather than send
        the key in the clear (plain http to another machine) unless ``allow_insecure_key``."""
        import ipaddress
        from urllib.parse import urlsplit

        key = os.environ.get(self.api_key_env)
        if not key:
            return {}
        url = urlsplit(self.base_url)
        host = url.hostname or ""
        try:
            local = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:  # a host name
            local = False
        if url.scheme != "https" and not local and not self.allow_insecure_key:
            raise UserError(f"refusing to send the API key (${self.api_key_env}) over plain http to {host}: use an "
                            f"https:// base_url or a server on this machine, or set allow_insecure_key: true (in "
                            f"teacher_options) if you trust the network")
        return {"Authorization": f"Bearer {key}"}

    def request_all(self, path: str, bodies: list[dict[str, Any] | None], parse: Callable[[int, Any], T],
                 done: Callable[[int, T], None], method: str = "POST") -> list[tuple[int, str]]:
        """Send every body to ``path`` (``method``); as answer ``i`` arrives, ``done(i, parse(i, its JSON))``.
        Returns the failures as (index, error message), after every other body is done; [] when all succeeded."""
        return asyncio.run(self._request_all(method, path, bodies, parse, done))

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request (retried as any), its JSON answer (None for an empty one); RequestError if it fails for good."""
        out: list[Any] = []
        failures = self.request_all(path, [body], lambda _, data: data, lambda _, data: out.append(data), method)
        if failures:
            raise RequestError(f"{method} {self.base_url}{path}: {failures[0][1]}")
        return out[0]

    def wait_until_up(self, path: str, within: float) -> None:
        """Ask ``GET path`` every second until it answers 200; RequestError after ``within`` seconds."""
        import time

        import httpx

        deadline = time.monotonic() + within
        while True:
            try:
                if httpx.get(self.base_url + path, headers=self.auth_headers(), timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RequestError(f"{self.base_url}{path} did not answer within {within} s")
            time.sleep(1)

    async def _request_all(self, method: str, path: str, bodies: list[dict[str, Any] | None],
                        parse: Callable[[int, Any], T], done: Callable[[int, T], None]) -> list[tuple[int, str]]:
        import httpx

        headers = self.auth_headers()
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        gate = asyncio.Semaphore(self.concurrency)
        failures: list[tuple[int, str]] = []

        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, limits=limits, timeout=timeout) as client:
            async def one(i: int, body: dict[str, Any] | None) -> None:
                try:
                    done(i, await self._request(client, gate, method, path, body, lambda data: parse(i, data)))
                except RequestError as e:
                    failures.append((i, str(e)))

            await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies)))
        return failures

    async def _request(self, client: Any, gate: asyncio.Semaphore, method: str, path: str,
                       body: dict[str, Any] | None, parse: Callable[[Any], T]) -> T:
        """One parsed answer, retried on transient failures; RequestError when it cannot be had."""
        import httpx

        error = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                async with gate:
                    async with asyncio.timeout(self.timeout):  # the whole attempt, however slowly bytes come
                        response = await client.request(method, path, json=body)
                if response.status_code == 200:
                    return parse(response.json() if response.content else None)
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRY_STATUS:
                    raise RequestError(error)
                retry_after = _retry_after(response.headers.get("retry-after"))
            except TimeoutError:
                error = f"no complete answer within the timeout ({self.timeout} s)"
            except (httpx.RequestError, ValueError) as e:  # connection, torn or non-JSON body, unusable answer
                error = f"{type(e).__name__}: {e}"
            if attempt < self.max_retries:
                await asyncio.sleep(backoff_delay(attempt, self.backoff_base, self.backoff_cap, retry_after,
                                                  max_retry_after=self.max_retry_after))
        raise RequestError(f"gave up after {self.max_retries + 1} attempts ({error})")
