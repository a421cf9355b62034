"""The webhook sender (:class:`reportcore.ports.WebhookSender`): one POST over httpx.

Redirects are not followed (a 3xx is a failed attempt: a redirect could lead to a host the
allow list does not name), the receiver's body is never read (only its status counts), and
every failure comes back as a :class:`reportcore.webhooks.SendResult`, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from reportcore.webhooks import SendResult

USER_AGENT = "farmiq-reportsvc-webhooks/1"
DEFAULT_TIMEOUT_SEC = 10.0


class HttpWebhookSender:
    """POSTs with one pooled client; ``timeout_sec`` bounds connect, each read and write."""

    def __init__(
        self, timeout_sec: float = DEFAULT_TIMEOUT_SEC, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._client = httpx.Client(
            timeout=timeout_sec,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
        )

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        try:
            with self._client.stream("POST", url, content=body, headers=dict(headers)) as r:
                return SendResult(status=r.status_code)
        except httpx.TimeoutException as exc:
            return SendResult(error=f"timeout ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return SendResult(error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()
