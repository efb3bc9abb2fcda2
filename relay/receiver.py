"""The public callback endpoint: read the body within limits, record it durably, then acknowledge."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from relay.errors import StoreError
from relay.ingest import BadBody, delivery_doc, parse_body, rejected_doc
from relay.metrics import Metrics
from relay.payloads import KINDS
from relay.provider import signature
from relay.store import DeliveryStore, now_iso

logger = logging.getLogger("relay.receiver")

RECEIVED = b'{"status":"received"}'


class _TooLarge(Exception):
    def __init__(self, head: bytes, received: int) -> None:
        self.head = head
        self.received = received


class CallbackReceiver:
    """Handles `POST /callback/{token}` for the public app."""

    def __init__(
        self,
        store: DeliveryStore,
        token: str,
        max_body_bytes: int,
        body_timeout: float,
        metrics: Metrics,
        hmac_key: str = "",
        known_kind: Callable[[str], str | None] | None = None,
    ) -> None:
        self.store = store
        self._hmac_key = hmac_key  # provider.hmac_key: set, every callback must be signed (kie.ai)
        self._known_kind = known_kind  # the kind a watched task was watched as
        self._token = token.encode()
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.metrics = metrics
        self._reading: set[asyncio.Timeout] = set()
        self._interrupted = False

    def interrupt_reads(self) -> None:
        """At shutdown: bodies still being received get their 408 now (and later ones at once), rather than
        keeping the drain waiting until server.body_timeout and being cancelled into a 500."""
        self._interrupted = True
        now = asyncio.get_running_loop().time()
        for deadline in self._reading:
            deadline.reschedule(now)

    def token_matches(self, candidate: str) -> bool:
        """Constant-time comparison, so response timing tells nothing about the token."""
        return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token)

    async def handle(self, request: Request) -> Response:
        """Record the callback, then answer 200; refuse bad input with a reason (and keep its bytes)."""
        started = time.perf_counter()
        if not self.token_matches(request.path_params["token"]):
            self.metrics.rejected.labels(reason="token").inc()
            return JSONResponse({"error": "not found"}, status_code=404)
        received_at = now_iso()
        host = request.headers.get("x-forwarded-host") or request.headers.get("host")
        length = request.headers.get("content-length", "")
        declared = int(length) if length.isdigit() else None
        if declared is not None and declared > self.max_body_bytes:
            return await self._reject(
                b"",
                f"body of {declared} bytes exceeds max_body_bytes",
                413,
                received_at,
                host,
                "too_large",
                truncated=True,
                received=0,
                declared=declared,
            )
        progress = [0]  # bytes received so far, for the record of a body that times out
        try:
            async with asyncio.timeout(0 if self._interrupted else self.body_timeout) as deadline:
                self._reading.add(deadline)
                try:
                    raw = await self._read(request, progress)
                finally:
                    self._reading.discard(deadline)
        except _TooLarge as exc:
            return await self._reject(
                exc.head,
                f"body exceeds max_body_bytes ({self.max_body_bytes})",
                413,
                received_at,
                host,
                "too_large",
                truncated=True,
                received=exc.received,
                declared=declared,
            )
        except TimeoutError:
            return await self._reject(
                b"",
                "relay is stopping and the body was not complete"
                if self._interrupted
                else f"body not received within {self.body_timeout:g} s",
                408,
                received_at,
                host,
                "timeout",
                truncated=True,
                received=progress[0],
                declared=declared,
            )
        except ClientDisconnect:
            self.metrics.rejected.labels(reason="disconnect").inc()
            return Response(status_code=400)
        try:
            payload = parse_body(raw)
        except BadBody as exc:
            return await self._reject(raw, str(exc), 400, received_at, host, "bad_json")
        if self._hmac_key:
            headers = request.headers
            timestamp, sent = headers.get("x-webhook-timestamp"), headers.get("x-webhook-signature")
            problem = signature.problem(self._hmac_key, payload, timestamp, sent, time.time())
            if problem is not None:
                reason = f"signature check failed: {problem}"
                return await self._reject(raw, reason, 401, received_at, host, "signature")
        try:
            doc = await self.store.record(self._doc(request, payload, received_at, raw, host))
        except ValueError as exc:  # parse_body keeps out what strict JSON cannot hold; this is the backstop
            return await self._reject(
                raw, f"not a JSON value relay can keep: {exc}", 400, received_at, host, "bad_json"
            )
        except StoreError as exc:
            self.metrics.rejected.labels(reason="store").inc()
            # 503 makes the provider retry later; never acknowledge what is not on disk.
            return JSONResponse({"error": f"cannot record the callback now, retry later: {exc}"}, status_code=503)
        self.metrics.observe_delivery(doc, time.perf_counter() - started)
        return Response(RECEIVED, media_type="application/json")

    def _doc(self, request: Request, payload: Any, received_at: str, raw: bytes, host: str | None) -> dict[str, Any]:
        """The log document, classified by the kind relay knows (callBackUrl `?kind=`, else the watch list)."""
        kind = request.query_params.get("kind")
        content_type = request.headers.get("content-type")
        doc = delivery_doc(payload, received_at, len(raw), host, raw, content_type, kind if kind in KINDS else None)
        if kind not in KINDS and doc["task_id"] and self._known_kind is not None:
            known = self._known_kind(doc["task_id"])
            if known is not None and known != doc["kind"]:  # a guess from the body's shape: the watch knows
                doc = delivery_doc(payload, received_at, len(raw), host, raw, content_type, known)
        return doc

    async def _read(self, request: Request, progress: list[int]) -> bytes:
        chunks: list[bytes] = []
        async for chunk in request.stream():
            progress[0] += len(chunk)
            if progress[0] > self.max_body_bytes:
                chunks.append(chunk)
                raise _TooLarge(b"".join(chunks)[: self.max_body_bytes], progress[0])
            chunks.append(chunk)
        return b"".join(chunks)

    async def _reject(
        self,
        raw: bytes,
        reason: str,
        status: int,
        received_at: str,
        host: str | None,
        metric: str,
        truncated: bool = False,
        received: int | None = None,
        declared: int | None = None,
    ) -> Response:
        self.metrics.rejected.labels(reason=metric).inc()
        doc = rejected_doc(raw, reason, status, received_at, host, truncated, received, declared)
        try:
            await self.store.record_rejected(doc)
        except StoreError as exc:
            logger.error("could not record a rejected request: %s", exc)
        logger.warning("rejected a callback (%s): %s", status, reason)
        return JSONResponse({"error": reason}, status_code=status)
