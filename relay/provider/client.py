"""An async client of the provider's API: Bearer key, the `{code, msg, data}` envelope, errors, a global rate limit.

The provider answers HTTP 200 for most errors and puts the real outcome in the envelope's `code`
(PROVIDER_API.md): 401 (bad key) and 429 (no credits) will not fix themselves, so they stop with a message saying
what to do; 405/430 (rate limited), 455 (maintenance), 500 and network errors are worth another try later. The API
key is a secret: it is only ever put in the Authorization header, and anything the provider says back is scrubbed
of it before it reaches a message or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from relay.errors import RelayError
from relay.ingest import BadBody, parse_body
from relay.payloads import as_int, as_text
from relay.provider.operations import Operation, poll_path
from relay.redact import MASK

logger = logging.getLogger("relay.provider")

#: Codes that will not fix themselves: what they mean and what to do.
STOP_CODES = {
    401: "the provider refused the API key (code 401): set provider.api_key or RELAY_PROVIDER_KEY to a valid key",
    429: "the provider account has insufficient credits (code 429): top up the account's credits",
}
#: Codes meaning "slow down" or "not now": the same request may work later.
RATE_LIMITED = frozenset({405, 430})
RETRY_CODES = RATE_LIMITED | {455, 500, 502, 503, 504}


class ProviderError(RelayError):
    """A request to the provider did not give an answer relay can use; `code` is the provider's, if any."""

    def __init__(self, message: str, code: int | None = None, sent: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.sent = sent  # False: the request never reached the provider, so resending cannot duplicate it


class ProviderStopped(ProviderError):
    """No request will work until the user acts (bad key, no credits, no key at all)."""


class ProviderUnavailable(ProviderError):
    """Rate limited, in maintenance, a server error, a network error or a garbled answer: try again later."""


class ProviderRefused(ProviderError):
    """The provider said no to this request (bad parameters, unknown task, ...): repeating it will not help."""


def backoff(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): exponential, with jitter so clients spread out."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


class RateLimiter:
    """At most `rate` requests per second in all, spaced evenly; `pause` holds every request back for a while."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self.clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Return when the next request may go out."""
        async with self._lock:
            now = self.clock()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)

    def pause(self, seconds: float) -> None:
        """Nothing goes out for `seconds` (the provider said we call too often)."""
        self._next = max(self._next, self.clock() + seconds)


class ProviderClient:
    """Talks to `base_url` with the API key; use as an async context manager (it owns an httpx client)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        rate_limit: float = 2.0,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.limiter = RateLimiter(rate_limit)
        self.requests = 0  # sent, for metrics and the README's cost figures
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            trust_env=False,  # a proxy from the environment must not see the key or reroute loopback tests
            follow_redirects=False,  # a redirect elsewhere would carry the Authorization header along
        )

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def scrub(self, text: str) -> str:
        """`text` without the API key (a provider might echo it back)."""
        return text.replace(self._key, MASK) if self._key else text

    async def submit(self, operation: Operation, body: dict[str, Any], retries: int = 3) -> tuple[str, dict[str, Any]]:
        """POST a task; returns its taskId and the whole answer. Retried only when it surely was not created."""
        answer = await self.call("POST", operation.path, body=body, retries=retries, idempotent=False)
        data = answer.get("data")
        task_id = as_text(data.get("taskId") or data.get("task_id")) if isinstance(data, dict) else None
        if task_id is None:
            raise ProviderRefused(f"the provider accepted the request but sent no taskId: {self._said(answer)}")
        return task_id, answer

    async def record_info(self, kind: str, task_id: str, retries: int = 0) -> dict[str, Any]:
        """The details endpoint's answer for one task (the whole envelope, code 200)."""
        return await self.call("GET", poll_path(kind), params={"taskId": task_id}, retries=retries)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        retries: int = 0,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        """One request, retried up to `retries` times with backoff when the failure is worth retrying."""
        if not self._key:
            raise ProviderStopped("no provider API key: set provider.api_key or RELAY_PROVIDER_KEY")
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once(method, path, params, body, idempotent)
            except ProviderUnavailable as exc:
                # A submit that may have reached the provider is not resent: it could create the task twice.
                retryable = idempotent or not exc.sent or exc.code in RATE_LIMITED | {455}
                if attempt > retries or not retryable:
                    raise
                delay = backoff(attempt)
                logger.warning("provider: %s %s: %s; retrying in %.1f s", method, path, exc, delay)
                await asyncio.sleep(delay)

    async def _once(
        self, method: str, path: str, params: dict[str, str] | None, body: dict[str, Any] | None, idempotent: bool
    ) -> dict[str, Any]:
        await self.limiter.wait()
        self.requests += 1
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        try:
            response = await self._http.request(method, path, params=params, json=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            message = f"cannot reach the provider at {self.base_url}: {type(exc).__name__}"
            raise ProviderUnavailable(message, sent=False) from None
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(f"the provider did not answer in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"the request to the provider failed: {type(exc).__name__}") from None
        return self._envelope(response)

    def _envelope(self, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        try:  # as strictly as a callback: no NaN, nothing the log could not hold
            answer = parse_body(response.content)
        except BadBody:
            answer = None
        said_code = as_int(answer.get("code")) if isinstance(answer, dict) else None
        # The envelope's code is the truth on HTTP 200; on an HTTP error it is kept when it is more specific.
        code = said_code if status == 200 or (said_code is not None and said_code != 200) else status
        if code in STOP_CODES:
            said = self._said(answer) if isinstance(answer, dict) else f"HTTP {status}"
            raise ProviderStopped(f"{STOP_CODES[code]} (provider says: {said})", code)
        if not isinstance(answer, dict):
            what = "an HTML page" if "html" in response.headers.get("content-type", "") else "something else"
            message = f"the provider answered HTTP {status} with {what}, not a JSON envelope"
            if code is not None and 400 <= code < 500:  # e.g. a wrong provider.base_url: resending will not help
                raise ProviderRefused(message, code)
            raise ProviderUnavailable(message, code)
        if code is None:
            raise ProviderUnavailable(f"the provider's answer (HTTP {status}) has no code: {self._said(answer)}")
        if code == 200:
            return answer
        said = self._said(answer)
        if code in RETRY_CODES:
            if code in RATE_LIMITED:  # every request waits, not only this one: the limit is per account
                self.limiter.pause(backoff(2, base=2.0))
            raise ProviderUnavailable(f"the provider answered code {code}: {said}", code)
        raise ProviderRefused(f"the provider refused the request with code {code}: {said}", code)

    def _said(self, answer: dict[str, Any]) -> str:
        said = as_text(answer.get("msg")) or as_text(answer.get("message")) or "(no message)"
        return self.scrub(said[:300])
