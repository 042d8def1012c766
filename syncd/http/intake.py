"""Webhook intake: the one route of the status server that strangers are meant to reach.

Everything here assumes the caller is hostile until a signature says otherwise, and bounds what
a caller can make syncd spend before that point:

- memory: a body is refused on its ``Content-Length`` and, when chunked, reading stops at
  :data:`MAX_WEBHOOK_BYTES` (413); the bodies being read hold at most :data:`MAX_BUFFERED`
  bytes together (503 beyond, which both vendors retry);
- time: a body must keep arriving at :data:`MIN_BODY_RATE` after a :data:`BODY_GRACE` and
  arrive whole within :data:`BODY_TIMEOUT` (503 with ``Retry-After`` otherwise, never a 4xx:
  PagerDuty drops a delivery answered with any 4xx but 429 and disables the endpoint after 3
  drops in a row, notes §6; see :func:`_read_capped`). A slow
  sender holds only the bytes it has sent, for a couple of seconds: 16 senders trickling a byte
  at a time used to hold all 16 reading slots for 10 s each, and by reconnecting, for good;
- information: an unknown account, an account without a webhook secret and a bad signature get
  the same 401 and the same body, after the same HMAC work, so the port does not tell which
  accounts exist;
- vendor calls: a verified delivery is only a hint (the daemon coalesces hints per account and
  never lets them eat the budget pushes need, see :meth:`syncd.daemon.Daemon.poll_soon`), and a
  delivery seen before (a vendor's retry, or a replay: PagerDuty v3 signatures carry no
  timestamp) is answered 202 and ignored. "Seen before" is the signed body plus, where the
  vendor signs one, the delivery's id (Svix's ``webhook-id``): two updates of one private
  incident.io incident have the same body and are still two deliveries.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Protocol

import anyio
import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from syncd.metrics import WEBHOOK_HINTS, WEBHOOKS
from syncd.vendors.base import Verified

log = structlog.get_logger(__name__)

MAX_WEBHOOK_BYTES = 256 * 1024  # PagerDuty drops deliveries over 256 KB anyway (notes §6)
MAX_BUFFERED = 16 * MAX_WEBHOOK_BYTES
"""Bytes the bodies being read may hold together (4 MiB): counted as they arrive, never as a
Content-Length promises, so holding it takes sending it."""
BODY_TIMEOUT = 10.0
"""Seconds a delivery's body may take to arrive at most (PagerDuty wants an answer in 5 s)."""
BODY_GRACE = 2.0
MIN_BODY_RATE = 64 * 1024
"""Bytes per second a body must average after :data:`BODY_GRACE`: a 256 KiB body has 6 s, a
trickle of a byte at a time about 2 s. Vendors send a delivery's few KiB in one go."""
REPLAY_TTL = 15 * 60.0
"""Seconds a verified delivery is remembered: longer than Svix's 5-minute timestamp tolerance."""
REPLAY_MAX = 10_000
"""Remembered deliveries at most (32-byte digests: well under a megabyte)."""
UNKNOWN = "(unknown)"
"""Metric label for deliveries to a name that is no webhook account: never the caller's text,
which would let anyone grow the metric's label set without bound."""

_REFUSED = {"error": "signature does not verify"}


class Verifier(Protocol):
    """A client's ``verify_webhook``: the delivery as verified (with the signed id that names
    it), or None."""

    def __call__(self, headers: Mapping[str, str], body: bytes) -> Verified | None: ...


class ReplayCache:
    """Digests of recently accepted deliveries, oldest first, bounded in size and age."""

    def __init__(self, ttl: float = REPLAY_TTL, size: int = REPLAY_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def first_time(self, key: bytes) -> bool:
        """True the first time ``key`` is offered within ``ttl``; remembers it."""
        now = self._clock()
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at < self.ttl and len(self._seen) < self.size:
                break
            del self._seen[oldest]
        if key in self._seen:
            return False
        self._seen[key] = now
        return True


class WebhookIntake:
    """``POST /webhooks/ACCOUNT``: bounded reading, uniform refusal, dedup, then a poll hint.

    ``verifiers`` maps each account with a webhook secret to its client's ``verify_webhook``;
    ``hint`` is called with the account of every new verified delivery and returns the outcome
    label it counts under (``scheduled``, ``coalesced``, ``deferred``); ``notes`` (per account,
    optional) is handed the verified body first. A delivery is named by the id its verifier
    returns (see :func:`_digest`), never by headers read again here: the replay key is then
    always the id the signature covered."""

    def __init__(self, verifiers: Mapping[str, Verifier], hint: Callable[[str], str],
                 notes: Mapping[str, Callable[[bytes], None]] | None = None) -> None:
        self.verifiers = dict(verifiers)
        self.hint = hint
        # Accounts whose client reads what a delivery names (PagerDuty: the incident id, so
        # the hinted poll reads it even when the change leaves no log entry).
        self.notes = dict(notes or {})
        self.replays = ReplayCache()
        self.buffered = 0  # bytes held by the bodies being read
        self._decoy = os.urandom(32)

    async def handle(self, request: Request) -> Response:
        account = request.path_params["account"]
        label = account if account in self.verifiers else UNKNOWN
        body = await self._read_capped(request)
        if isinstance(body, tuple):
            outcome, response = body
            WEBHOOKS.labels(label, outcome).inc()
            return response
        verified = self._verify(account, request, body)
        if verified is None:
            WEBHOOKS.labels(label, "rejected").inc()
            return JSONResponse(_REFUSED, status_code=401)
        key = _digest(account, body, verified.delivery_id)
        if not self.replays.first_time(key):
            WEBHOOKS.labels(label, "duplicate").inc()
            return JSONResponse({"accepted": True}, status_code=202)
        WEBHOOKS.labels(label, "accepted").inc()
        note = self.notes.get(account)
        if note is not None:
            try:
                note(body)
            except Exception as exc:  # a parser bug must never turn a delivery into a 500
                log.warning("webhook.note_error", account=account, error=type(exc).__name__)
        WEBHOOK_HINTS.labels(label, self.hint(account)).inc()
        return JSONResponse({"accepted": True}, status_code=202)

    async def _read_capped(self, request: Request) -> bytes | tuple[str, Response]:
        """The body, or the metric outcome and response that refuse it: 400 for a nonsense
        Content-Length, 413 past :data:`MAX_WEBHOOK_BYTES` (before reading, when the length is
        declared), 503 when the bodies being read would hold more than :data:`MAX_BUFFERED`
        (``busy``) and when it falls behind :data:`MIN_BODY_RATE` or :data:`BODY_TIMEOUT`
        (``refused``): a slow body is as likely a vendor on a bad network as an attacker, and
        a 503 is retried where a 408 would count as a drop towards disabling the endpoint."""
        declared = request.headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                return "refused", JSONResponse({"error": "bad Content-Length"}, status_code=400)
            if int(declared) > MAX_WEBHOOK_BYTES:
                return "refused", _too_large()
        if self.buffered >= MAX_BUFFERED:
            return "busy", _retry_later("busy, retry later")
        chunks: list[bytes] = []
        size = 0
        start = anyio.current_time()
        stream = request.stream()
        try:
            while True:
                allowed = min(BODY_TIMEOUT, BODY_GRACE + size / MIN_BODY_RATE)
                with anyio.move_on_after(start + allowed - anyio.current_time()) as scope:
                    try:
                        chunk = await anext(stream)
                    except StopAsyncIteration:
                        return b"".join(chunks)
                    except ClientDisconnect:
                        return "refused", JSONResponse({"error": "client went away"},
                                                       status_code=400)
                if scope.cancelled_caught:
                    return "refused", _retry_later("body too slow, retry later")
                if size + len(chunk) > MAX_WEBHOOK_BYTES:
                    return "refused", _too_large()
                if self.buffered + len(chunk) > MAX_BUFFERED:
                    return "busy", _retry_later("busy, retry later")
                size += len(chunk)
                self.buffered += len(chunk)
                chunks.append(chunk)
        finally:
            self.buffered -= size
            await stream.aclose()

    def _verify(self, account: str, request: Request, body: bytes) -> Verified | None:
        verify = self.verifiers.get(account)
        if verify is None:
            # The same HMAC work as a real check, so timing does not tell the names apart.
            hmac.new(self._decoy, body, hashlib.sha256).digest()
            return None
        try:
            verified = verify(request.headers, body)
        except Exception as exc:  # a verifier bug must be a refusal, never a 500
            log.warning("webhook.verify_error", account=account, error=type(exc).__name__)
            return None
        return verified if isinstance(verified, Verified) else None


def _digest(account: str, body: bytes, identity: bytes = b"") -> bytes:
    """What makes a delivery the same delivery: its account, its (signed) body and, where the
    vendor signs one, its id. Unsigned headers are left out on purpose: PagerDuty signs only
    the body, so its ``X-Webhook-Id`` would let a replayer dress an old delivery up as a new
    one (its bodies carry a unique ``event.id`` anyway, notes §6). Svix signs ``webhook-id``
    with the body and keeps it across retries (incident.io notes §8), and incident.io's
    private-incident events carry only ``{"id"}``, so their bodies repeat: without the id,
    the second update of a private incident within :data:`REPLAY_TTL` was taken for a replay
    and polled nothing."""
    framed = len(identity).to_bytes(4, "big") + identity
    return hashlib.sha256(account.encode() + b"\0" + framed + body).digest()


def _retry_later(error: str) -> Response:
    """503 with ``Retry-After``, which both vendors retry (PagerDuty and Svix retry 5xx).
    Connection: close, so the rest of a body it stopped reading is never read."""
    return JSONResponse({"error": error}, status_code=503,
                        headers={"Retry-After": "1", "Connection": "close"})


def _too_large() -> Response:
    # Connection: close, so the rest of an oversized body is never read.
    return JSONResponse({"error": "payload too large"}, status_code=413,
                        headers={"Connection": "close"})
