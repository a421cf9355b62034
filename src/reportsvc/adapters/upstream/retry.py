"""Asking an upstream until it answers: transient faults (connect errors, timeouts, 429, 5xx)
are retried with exponential backoff and full jitter, honouring ``Retry-After``; what is left
becomes the core's ``UpstreamUnavailable`` / ``UpstreamRejected`` / ``UpstreamBadResponse``,
whose messages name the service, the status and the path, never the token."""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import threading
import time
import uuid
from collections.abc import Callable

import httpx

from reportcore.errors import UpstreamBadResponse, UpstreamRejected, UpstreamUnavailable

from .client import ATTEMPT, Clients
from .config import UpstreamConfig
from .wire import Call


class Stopped(Exception):
    """The export stopped (a cancel, a failed window, a shutdown): fetch no more."""


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; ``None`` if absent/unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


class Retrying:
    """GETs with retries. ``sleep`` and ``rng`` are the backoff's clock and dice (tests pass
    fakes); with the real ``time.sleep`` a backoff is a wait on the export's stop event, so a
    cancel does not wait it out."""

    def __init__(
        self,
        config: UpstreamConfig,
        clients: Clients,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._clients = clients
        self._sleep = sleep
        self._rng = rng or random.Random()

    def backoff(self, attempt: int) -> float:
        """Full jitter: anywhere between 0 and the capped exponential step."""
        step = self._config.backoff_base_sec * 2 ** min(attempt, 32)  # no float overflow
        return self._rng.uniform(0.0, min(self._config.backoff_max_sec, step))

    def get(self, call: Call, query: str, stop: threading.Event) -> bytes:
        """The body of a 2xx answer to ``call`` with ``query``, after retrying transient
        failures; :class:`Stopped` once ``stop`` is set."""
        tries = self._config.retries + 1
        service = call.upstream.value
        url = f"{call.base_url}{call.path}?{query}" if query else f"{call.base_url}{call.path}"
        client = self._clients.client(call.base_url)
        for attempt in range(tries):
            if stop.is_set():
                raise Stopped
            headers = {"x-request-id": str(uuid.uuid4()), "x-trace-id": call.trace_id}
            if self._config.token:
                headers["authorization"] = f"Bearer {self._config.token}"
            try:
                with self._clients.slot(call.base_url, stop) as held:
                    if not held:
                        raise Stopped
                    answer = client.get(url, headers=headers, extensions={ATTEMPT: attempt})
            except httpx.DecodingError as exc:
                raise UpstreamBadResponse(
                    f"{service} sent an undecodable body for {call.describe()}: {exc}"
                ) from exc
            except httpx.TimeoutException:
                problem = f"{service} did not answer {call.describe()} in time"
                delay = self.backoff(attempt)
            except httpx.TransportError as exc:
                # never the text of a protocol error: it may quote a header (the token)
                reason = (
                    "a header or the target is not sendable"
                    if isinstance(exc, httpx.LocalProtocolError)
                    else f"{type(exc).__name__}: {exc}"
                )
                problem = f"{service} could not be reached for {call.describe()} ({reason})"
                delay = self.backoff(attempt)
            else:
                status = answer.status_code
                if 200 <= status < 300:
                    return answer.content
                problem = f"{service} answered {status} for {call.describe()}"
                if status != 429 and status < 500:
                    raise UpstreamRejected(problem)
                waited = retry_after_seconds(
                    answer.headers.get("retry-after"), dt.datetime.now(dt.UTC)
                )
                delay = (
                    self.backoff(attempt)
                    if waited is None
                    else min(waited, self._config.backoff_max_sec)
                )
            if attempt + 1 == tries:
                raise UpstreamUnavailable(f"{problem} (gave up after {tries} tries)")
            self._pause(delay, stop)
        raise AssertionError("unreachable: the loop returns or raises")

    def _pause(self, delay: float, stop: threading.Event) -> None:
        if self._sleep is time.sleep:
            stop.wait(delay)
        else:
            self._sleep(delay)
        if stop.is_set():
            raise Stopped
