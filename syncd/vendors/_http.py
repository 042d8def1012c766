"""The request loop every vendor client shares: budget, retries, error typing, JSON checking.

A vendor client owns its paths and JSON; this module owns the mechanics that must be the same for
all of them, so that a retry storm or a leaked key is fixed in one place:

- every request first takes a token from the account's :class:`~syncd.ratelimit.Budget`;
- transient failures are retried with exponential backoff and full jitter, but only when the
  request is safe to repeat (reads, idempotent writes, or a rate-limit answer, which means the
  vendor did not act);
- a rate-limit answer pauses the budget bucket for the vendor's reset time and is retried after it;
- every answer is turned into a typed :mod:`syncd.vendors.base` error or parsed JSON, including
  answers that lie about themselves: a body that does not decode as its ``Content-Encoding``
  says, JSON nested too deeply to parse, or a body larger than :data:`MAX_RESPONSE_BYTES`
  (read as a stream and abandoned past the cap) are all :class:`MalformedResponse`;
- a TLS verification failure is a :class:`TLSError` that names the host, never a retried
  "connection failed";
- errors and logs carry the route template ("GET /incidents/{id}"), never headers or credentials;
- every write (any method but GET/HEAD/OPTIONS) that may have taken effect is counted once
  for :func:`~syncd.vendors.base.counting_writes`, the one count for every process, led or
  not; a write refused, or never sent (no connection made or free: :data:`_NOT_SENT`; or
  cancelled before httpcore began to send it: :data:`_HEADERS_STARTED`), is not.

An unpaginated list is read element by element (:meth:`VendorHTTP.items`, :func:`json_items`)
with the standard library's ``json.JSONDecoder.raw_decode`` per element, not a streaming parser
such as ijson, deliberately: ijson's fast backend is a C extension (a native dependency to build
or find wheels for on every platform syncd runs on; its pure-Python fallback is far slower);
``raw_decode`` is the decoder ``json.loads`` runs, so a refused list gets the same messages as
:func:`parse_json` + :func:`require` give a whole answer (tests/unit/test_json_items.py checks
that for any chunking); and it was measured to be enough: docs/benchmarks.md, entry
"2026-12-01" (peak RSS 95.1 -> 81.2 MB at 10,000 open incidents per account, CPU per poll
cycle 0.39 -> 0.42 s).
"""

from __future__ import annotations

import codecs
import functools
import json as jsonlib
import math
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import anyio
import httpx
import structlog

from syncd import metrics, secrets
from syncd.ratelimit import ACCOUNT, Budget
from syncd.vendors.base import (
    REFUSALS,
    AuthError,
    MalformedResponse,
    NotFound,
    PermanentError,
    RateLimited,
    TLSError,
    TransientError,
    VendorError,
    note_write_landed,
)

log = structlog.get_logger(__name__)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

MAX_RESPONSE_BYTES = 10 * 1024 * 1024
"""The largest vendor answer syncd reads, after decoding (10 MiB). The largest legitimate page
is far smaller (a page of 100 PagerDuty incidents is about 200 KB); a bigger answer is refused as
MalformedResponse as soon as it passes the cap, before it can take the daemon's memory (a 30 MB
answer once took the daemon to 264 MB)."""

MAX_STREAMED_BYTES = 16 * MAX_RESPONSE_BYTES
"""The largest unpaginated list syncd reads (160 MiB), element by element
(:meth:`VendorHTTP.items`): memory holds one element at a time, so this cap only bounds how long
one read may take. Splunk On-Call's live list is 7.3 MB at 10,000 open incidents, so this is
some 200,000 incidents; each element stays under :data:`MAX_RESPONSE_BYTES`."""

_T = TypeVar("_T")

_FAILURES = (httpx.TransportError, TimeoutError, MalformedResponse)
"""What a failed exchange raises: on the wire (httpx's timeouts are TransportErrors), past the
whole-exchange deadline, or an answer refused while it is read (:meth:`VendorHTTP._failed`)."""

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Failures before the request left: no connection could be made, or none was free in the
pool in time. A write that fails with one of these cannot have landed, so it is not counted."""

_HEADERS_STARTED = frozenset({"http11.send_request_headers.started",
                              "http2.send_request_headers.started"})
"""httpcore's trace events (its ``trace`` request extension, httpcore/_async/http11.py and
http2.py) fired as it begins to send a request: before them (a pool wait, the TCP connect, the
TLS handshake) nothing of the request has left."""

_PROXY_TLS_STARTED = "proxy.start_tls.started"
"""Through an HTTPS proxy (httpx reads ``HTTPS_PROXY``), httpcore first sends the proxy a CONNECT
request with the same trace callback (httpcore/_async/http_proxy.py): its headers are not the
vendor's request. The TLS handshake with the vendor that follows starts the count afresh."""

RETRY_AFTER_FLOOR = 1.0
"""The wait after a rate-limit answer whose reset is no wait at all: 0, negative (a vendor clock
behind ours, an HTTP-date in the past) or not a number, which would otherwise send the retry at
once, into the same limit. A positive reset, however short, is the vendor's word and is kept."""
RETRY_AFTER_CAP = 600.0
"""The longest wait after one rate-limit answer: ten times the longest window any vendor
documents (60 s). A larger reset (``1e9``, ``inf``) is not a wait syncd can honour: it would park
the request, and with the paused bucket the whole account, for years. Retrying after the cap
costs one more rate-limit answer at worst, which carries the vendor's reset again."""

Classifier = Callable[[httpx.Response, str], VendorError | None]
"""Vendor hook: turn a response into an error (or None to accept it). Runs before the default."""


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse Retry-After as integer/float seconds or an HTTP-date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def bounded_wait(seconds: float) -> float:
    """A vendor's reset time as a wait syncd honours: at most :data:`RETRY_AFTER_CAP`;
    :data:`RETRY_AFTER_FLOOR` when it is no wait (0, negative, NaN: ``float("nan")`` parses)."""
    if not seconds > 0:
        return RETRY_AFTER_FLOOR
    return min(RETRY_AFTER_CAP, seconds)


def default_classify(response: httpx.Response, endpoint: str, account: str) -> VendorError | None:
    """The HTTP-status reading every vendor starts from; vendors refine it with a Classifier."""
    status = response.status_code
    if status < 400:
        return None
    message = short_body(response)
    kw = {"account": account, "endpoint": endpoint, "status": status}
    if status == 429:
        wait = retry_after_seconds(response.headers.get("retry-after"))
        return RateLimited(message or "rate limited", retry_after=wait or 1.0, **kw)
    if status in (401, 403):
        return AuthError(message or "authentication failed", **kw)
    if status == 404:
        return NotFound(message or "not found", **kw)
    if status in (408, 425) or status >= 500:
        return TransientError(message or "server error", **kw)
    return PermanentError(message or "request refused", **kw)


def short_body(response: httpx.Response, limit: int = 300) -> str:
    """A log-safe excerpt of an error body. A proxy or WAF page may echo request headers, so
    the body is redacted before it is cut (a cut could leave half a key)."""
    try:
        text = response.text
    except (UnicodeDecodeError, httpx.ResponseNotRead):
        return ""
    text = secrets.redact(" ".join(text.split()))
    return text[:limit] + ("..." if len(text) > limit else "")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context (httpx's default: certifi's CA bundle, ``SSL_CERT_FILE``/``DIR``) for
    every vendor session of the process: each session would otherwise load the CA bundle
    again, about 1 MB and a few milliseconds per account and host."""
    return httpx.create_ssl_context()


class VendorHTTP:
    """One account's HTTP session with a vendor API."""

    def __init__(
        self,
        *,
        account: str,
        base_url: str,
        headers: Mapping[str, str],
        budget: Budget,
        timeout: float = 15.0,
        max_retries: int = 4,
        classify: Classifier | None = None,
        bucket_for: Callable[[str], str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        max_body: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.account = account
        self.max_body = max_body
        self.budget = budget
        self.timeout = timeout
        self.max_retries = max_retries
        self._classify = classify
        self._bucket_for = bucket_for or (lambda endpoint: ACCOUNT)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._traced = False
        """The transport has fired an httpcore trace event: it reports when a request starts to
        leave (:data:`_HEADERS_STARTED`). Until then (an ASGI simulator never does) a write
        cancelled during its exchange counts as maybe landed."""
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=dict(headers),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            verify=tls_context(),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def backoff(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self._backoff_cap, self._backoff_base * 2**attempt))

    async def request(
        self,
        method: str,
        route: str,
        *,
        path: Mapping[str, Any] | None = None,
        params: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        write: bool | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send ``method route`` and return a successful response or raise a VendorError.

        ``route`` is the template ("/incidents/{id}"); ``path`` fills it. ``write`` (default: not
        GET) decides budget priority; ``idempotent`` (default: GET/PUT/DELETE) decides whether a
        transient failure is retried. Rate-limit answers are always retried: the vendor did not
        act on them.
        """
        response, _ = await self._send(method, route, None, path=path, write=write,
                                       idempotent=idempotent, params=params, json=json,
                                       headers=headers)
        return response

    async def _send(
        self, method: str, route: str, opened: Callable[[httpx.Response], Awaitable[_T]] | None,
        *, path: Mapping[str, Any] | None = None, write: bool | None = None,
        idempotent: bool | None = None, **send: Any,
    ) -> tuple[httpx.Response, _T | None]:
        """The one retry loop (:meth:`request`, :meth:`items`), for :meth:`request`'s
        arguments (``send``: its ``params``, ``json``, ``headers``): each attempt takes a budget
        token and counts against ``max_retries``. ``opened``: a successful answer is left
        unread and open and ``opened(response)`` reads the start of its body as part of the
        same attempt (a failure there is retried like a failed exchange, not by a loop of its
        own); the response is returned open, for the caller to read, count (:meth:`_count`)
        and close."""
        method = method.upper()
        endpoint = f"{method} {route}"
        url = route.format(**{k: str(v) for k, v in (path or {}).items()})
        is_write = method != "GET" if write is None else write
        safe = method in ("GET", "PUT", "DELETE", "HEAD") if idempotent is None else idempotent
        bucket = self._bucket_for(endpoint)
        attempt = 0
        while True:
            await self.budget.acquire(bucket, write=is_write)
            started = time.monotonic()
            # A write of this attempt that may have landed and is not counted yet: counted
            # once, when it is accepted or fails ambiguously (:func:`note_write_landed`).
            uncounted = method not in READ_METHODS
            headers_started = False

            async def trace(event: str, _info: Mapping[str, Any]) -> None:
                nonlocal headers_started
                self._traced = True
                if event == _PROXY_TLS_STARTED:
                    headers_started = False  # the CONNECT to the proxy was not the write
                else:
                    headers_started = headers_started or event in _HEADERS_STARTED

            try:
                # httpx times each phase; this bounds the whole exchange, which also covers
                # transports that enforce no timeouts at all (in-process ASGI).
                with anyio.fail_after(self.timeout * 2):
                    response = await self._exchange(
                        method, url, endpoint, opened is not None,
                        trace if uncounted else None, **send
                    )
            except _FAILURES as exc:
                error = self._failed(exc, endpoint)
                if isinstance(exc, _NOT_SENT):
                    uncounted = False  # never left: it cannot have landed
            except BaseException as exc:
                # Cancelled (a stop) during the exchange: the write may have reached the
                # vendor, so it counts, unless the transport says it had not begun to leave
                # (still waiting for a connection, connecting, in the TLS handshake). An
                # Exception here (a write guard's LeaseLost) was raised before anything was sent.
                if (uncounted and not isinstance(exc, Exception)
                        and (headers_started or not self._traced)):
                    note_write_landed()
                raise
            else:
                metrics.VENDOR_REQUEST_SECONDS.labels(self.account).observe(
                    time.monotonic() - started
                )
                found = (self._classify(response, endpoint) if self._classify else None) or (
                    default_classify(response, endpoint, self.account)
                )
                if found is not None:
                    self._count(endpoint, str(response.status_code))
                    if uncounted and not isinstance(found, REFUSALS):
                        note_write_landed()  # before the close, which a stop may cancel
                        uncounted = False
                    await _close(response)
                    found.account, found.endpoint = self.account, endpoint
                    found.args = (found._render(),)
                    error = found
                elif opened is None:
                    self._count(endpoint, str(response.status_code))
                    if uncounted:
                        note_write_landed()
                    return response, None
                else:
                    if uncounted:
                        note_write_landed()  # accepted: reading its answer cannot undo it
                        uncounted = False  # counted once, however the read ends
                    kept = False
                    try:
                        result = await opened(response)
                        kept = True
                        return response, result
                    except _FAILURES as exc:
                        error = self._failed(exc, endpoint, reading=True)
                    finally:
                        if not kept:
                            await _close(response)
            if uncounted and not isinstance(error, REFUSALS):
                note_write_landed()  # a 5xx, a timeout, a garbled 2xx: it may have landed
            if isinstance(error, RateLimited):
                error.retry_after = bounded_wait(error.retry_after)
                metrics.VENDOR_RATE_LIMITED.labels(self.account, endpoint).inc()
                self.budget.pause(bucket, error.retry_after)
            retryable = isinstance(error, RateLimited) or (
                isinstance(error, TransientError) and safe
            )
            if not retryable or attempt >= self.max_retries:
                raise error
            delay = (
                error.retry_after + random.uniform(0, 0.25)
                if isinstance(error, RateLimited)
                else self.backoff(attempt)
            )
            log.info(
                "vendor.retry",
                account=self.account,
                endpoint=endpoint,
                attempt=attempt + 1,
                delay=round(delay, 3),
                error=type(error).__name__,
                status=error.status,
            )
            attempt += 1
            await self._sleep(delay)

    def _count(self, endpoint: str, outcome: str) -> None:
        """One request in ``syncd_vendor_requests_total``: its HTTP status, or how it failed."""
        metrics.VENDOR_REQUESTS.labels(self.account, endpoint, outcome).inc()

    def _failed(self, exc: Exception, endpoint: str, *, reading: bool = False) -> VendorError:
        """The VendorError for an exchange that failed with ``exc`` (one of
        :data:`_FAILURES`), counted under the outcome it had: ``timeout``, ``error``, ``tls``
        or ``malformed``, the same whether it failed before the status line or while a
        streamed body was read (``reading``)."""
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            what = "timed out reading the answer" if reading else "timed out"
            error: VendorError = TransientError(f"{what} ({type(exc).__name__})",
                                                account=self.account, endpoint=endpoint)
            outcome = "timeout"
        elif isinstance(exc, httpx.TransportError):
            error = self._transport_error(exc, endpoint)
            outcome = "tls" if isinstance(error, TLSError) else "error"
        else:
            assert isinstance(exc, MalformedResponse)
            error, outcome = exc, "malformed"
        self._count(endpoint, outcome)
        return error

    async def _exchange(self, method: str, url: str, endpoint: str, keep_open: bool,
                        trace: Callable[[str, Mapping[str, Any]], Awaitable[None]] | None,
                        **kw: Any
                        ) -> httpx.Response:
        """Send one request and read its body as a stream, at most :data:`MAX_RESPONSE_BYTES`
        (``keep_open``: a 2xx answer's body is left for the caller; ``trace``: httpcore's trace
        extension, told each step of the exchange; writes only: a read has nothing to count)."""
        extensions = {} if trace is None else {"trace": trace}
        request = self.client.build_request(method, url, extensions=extensions, **kw)
        response = await self.client.send(request, stream=True)
        if keep_open and response.is_success:
            return response
        try:
            await read_capped(response, self.max_body, endpoint=endpoint, account=self.account)
        finally:
            await _close(response)
        return response

    def _transport_error(self, exc: httpx.TransportError, endpoint: str) -> VendorError:
        """A failed certificate check is a TLSError naming the host (a configuration problem,
        not retried); anything else on the wire is transient."""
        failure = _cert_failure(exc)
        if failure is not None:
            host = self.client.base_url.host or "the vendor"
            reason = failure.verify_message or failure.reason or str(failure)
            return TLSError(f"TLS verification failed for {host}: {reason}",
                            account=self.account, endpoint=endpoint)
        return TransientError(f"connection failed ({type(exc).__name__})",
                              account=self.account, endpoint=endpoint)

    async def json(self, method: str, route: str, **kw: Any) -> Any:
        """Like :meth:`request`, and parse the body as JSON (MalformedResponse when it is not)."""
        response = await self.request(method, route, **kw)
        return parse_json(response, f"{method.upper()} {route}", self.account)

    async def items(self, method: str, route: str, key: str, **kw: Any) -> AsyncIterator[Any]:
        """Like :meth:`json` followed by ``require(body, key, list)``, but the array's elements
        are read from the network and decoded one at a time as the caller iterates (see
        :func:`json_items`): for an unpaginated list, which can be several MB of JSON, so that
        it is never held whole. Errors are raised while iterating. The body's reads share one
        ``2 * timeout`` deadline, as a whole exchange does. Reading up to the first element is
        part of the request's attempt: a body dropped or stalled before it is a TransientError
        retried within the same ``max_retries`` as any failed exchange (the same attempt
        count and budget tokens, never a retry loop around :meth:`request`'s own); after it,
        it is raised (the caller has seen part of the answer). The request is counted in
        ``syncd_vendor_requests_total`` once its body has been read (or the caller stopped):
        under its status, or under how the body failed (``timeout``, ``error``, ``malformed``),
        as a whole-body read that fails is. Iterate to the end, or close the iterator
        (``contextlib.aclosing``), so the connection is released at once."""
        endpoint = f"{method.upper()} {route}"

        async def first(response: httpx.Response) -> tuple[AsyncIterator[Any], list[Any]]:
            rows = json_items(response, key, endpoint, self.account, gap_cap=self.max_body,
                              wait=self.timeout * 2)
            try:
                return rows, [await anext(rows)]
            except StopAsyncIteration:
                return rows, []

        response, opened = await self._send(method, route, first, **kw)
        assert opened is not None
        rows, head = opened
        outcome: str | None = str(response.status_code)
        try:
            for item in head:
                yield item
            async for item in rows:
                yield item
        except _FAILURES as exc:
            outcome = None
            raise self._failed(exc, endpoint, reading=True) from None
        finally:
            try:
                await rows.aclose()
            finally:  # released even if closing the reader is itself cancelled
                await _close(response)
                if outcome is not None:
                    self._count(endpoint, outcome)


async def _close(response: httpx.Response) -> None:
    await response.aclose()
    # httpx binds the response and its stream to each other (a reference cycle): left alone,
    # every body read waits for the cyclic garbage collector, a few MB at idle.
    response.stream = httpx.ByteStream(b"")


def parse_json(response: httpx.Response, endpoint: str, account: str) -> Any:
    if not response.content:
        return None
    kind = response.headers.get("content-type", "")
    try:
        return jsonlib.loads(response.content)
    except RecursionError:
        raise malformed("JSON nested too deeply to parse", account=account, endpoint=endpoint,
                        status=response.status_code) from None
    except (ValueError, UnicodeDecodeError):
        what = "an HTML page" if "html" in kind else "invalid JSON"
        raise malformed(f"expected JSON, got {what}", account=account, endpoint=endpoint,
                        status=response.status_code) from None


_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's insignificant whitespace, as the json module has it
_DECODER = jsonlib.JSONDecoder()
_NUMBER_GOES_ON = frozenset("0123456789+-.eE")
"""What may still follow the end of a text's last number in a later chunk: ``12`` at the end
of one chunk can be ``12.5e3`` once the next arrives."""


class _OverCap(Exception):
    """A streamed body went past a cap (refused as MalformedResponse, not as invalid JSON)."""


class _Text:
    """The decoded text of a streamed body, read only as far as the parser needs it.

    ``text[i:]`` is what is left to parse; what was parsed is dropped whenever a chunk arrives,
    so the process holds one chunk plus the element being decoded, not the body. Bytes are
    decoded as ``json.loads`` decodes them (``json.detect_encoding`` on the first bytes,
    ``surrogatepass``), with an incremental decoder so a character split between two chunks
    decodes whole."""

    def __init__(self, chunks: AsyncIterator[bytes], *, gap_cap: int, total_cap: int,
                 wait: float) -> None:
        self._chunks = chunks
        self._gap_cap, self._total_cap = gap_cap, total_cap
        self._wait = wait  # seconds left for waiting on the network, all reads together
        self._decoder: codecs.IncrementalDecoder | None = None
        self._head = b""
        self.text, self.i = "", 0
        self.done = False
        self.size = 0  # bytes read
        self.gap = 0  # characters parsed since the last element was handed out

    async def more(self, want: int = 1) -> bool:
        """Read on until ``want`` more characters have arrived or the body has ended, and
        append them (joined once: a large element arriving in small chunks is not copied once
        per chunk); False when nothing more came. Refused when what waits for more (the
        unparsed text, and what was parsed since the last element) is already over the gap
        cap: one element, or a stall, too large to keep reading. The waits for the network
        share one deadline, as reading a whole body did."""
        parts: list[str] = []
        got = 0
        while got < want and not self.done:
            self._check(self.gap + len(self.text) - self.i + got)
            started = time.monotonic()
            with anyio.fail_after(max(self._wait, 0.0)):
                chunk = await anext(self._chunks, None)
            self._wait -= time.monotonic() - started
            if chunk is None:
                self.done = True
                new = self._decode(b"", final=True)
            else:
                self.size += len(chunk)
                if self.size > self._total_cap:
                    raise _OverCap(f"response is over the {self._total_cap}-byte cap; "
                                   "not read further")
                new = self._decode(chunk, final=False)
            if new:
                parts.append(new)
                got += len(new)
        if parts:
            self.text, self.i = self.text[self.i:] + "".join(parts), 0
        return bool(parts)

    def _check(self, gap: int) -> None:
        if gap > self._gap_cap:
            raise _OverCap(f"response is over the {self._gap_cap}-byte cap without a complete "
                           "element (counted in characters); not read further")

    def _parsed(self, end: int) -> None:
        """The parser moves on to ``end``."""
        self.gap += end - self.i
        self.i = end
        self._check(self.gap)

    def _decode(self, chunk: bytes, *, final: bool) -> str:
        if self._decoder is None:
            self._head += chunk
            if len(self._head) < 4 and not final:
                return ""  # json.detect_encoding looks at up to four bytes
            encoding = jsonlib.detect_encoding(self._head)
            self._decoder = codecs.getincrementaldecoder(encoding)("surrogatepass")
            chunk, self._head = self._head, b""
        return self._decoder.decode(chunk, final)

    async def rest(self) -> str:
        """Everything left, read to the end (bounded by the caps)."""
        while await self.more():
            pass
        return self.text[self.i:]

    async def skip(self) -> str:
        """Skip whitespace; the next character, or "" at the end of the body."""
        while True:
            self._parsed(_SPACE.match(self.text, self.i).end())  # type: ignore[union-attr]
            if self.i < len(self.text):
                return self.text[self.i]
            if not await self.more():
                return ""

    async def value(self) -> Any:
        """The JSON value at the position, reading on until it is whole. A value that fails
        to decode, or a number that ends where the text does, waits for the text to double
        (so a large element costs a few decodes, not one per chunk), but never past the gap
        cap, so whether an element under the cap is accepted does not depend on where the
        chunks end; at the end of the body the decoder's answer is final."""
        while True:
            pending = len(self.text) - self.i
            try:
                value, end = _DECODER.raw_decode(self.text, self.i)
            except ValueError:
                if self.done:
                    raise
            else:
                if self.done or (end < len(self.text)
                                 and self.text[end] not in _NUMBER_GOES_ON):
                    self._parsed(end)
                    return value
            self._check(self.gap + pending)  # all the cap allows is here, and not whole
            await self.more(min(max(pending, 1), self._gap_cap - self.gap - pending + 1))


async def json_items(response: httpx.Response, key: str, endpoint: str, account: str, *,
                     gap_cap: int = MAX_RESPONSE_BYTES, total_cap: int = MAX_STREAMED_BYTES,
                     wait: float = math.inf) -> AsyncIterator[Any]:
    """The elements of the array at ``key`` of a JSON object body, read from the network and
    decoded one by one.

    ``json.loads`` of Splunk On-Call's unpaginated incident list (7.3 MB with 10,000 incidents)
    builds ~29 MB of dicts and strings at once, and reading the body whole holds it twice more
    (chunks, then the joined bytes, then the text): each such peak leaves the process larger
    (CPython's allocator keeps an arena as long as one object in it lives), and the 10 MiB
    answer cap refused lists of more than ~14,000 incidents. Here the body is read as a stream
    and every element is decoded by the json module's own decoder
    (``JSONDecoder.raw_decode``, which decodes one value at an index:
    https://docs.python.org/3/library/json.html#json.JSONDecoder.raw_decode) as soon as its
    text has arrived, and dropped when the caller moves on. Caps: ``gap_cap`` bytes without a
    complete element (what one element may take, and what a stalling answer may send before
    it is refused) and ``total_cap`` bytes in all; ``wait`` seconds of waiting for the network
    in all (TimeoutError past it). The same answers are refused as by
    :func:`parse_json` + :func:`require`, with the same messages: invalid JSON anywhere
    (checked to the end, after the last element), no object, ``key`` missing or not a list;
    also a repeated ``key`` (``json.loads`` would keep the last one silently).
    """
    status = response.status_code
    kind = response.headers.get("content-type", "")
    refuse_declared(response, total_cap, endpoint=endpoint, account=account)
    try:
        text = _Text(response.aiter_bytes(), gap_cap=gap_cap, total_cap=total_cap, wait=wait)
        async for item in _array_at(text, key, endpoint, account):
            yield item
    except _OverCap as exc:
        raise malformed(str(exc), account=account, endpoint=endpoint, status=status) from None
    except httpx.DecodingError:
        raise undecodable(response, endpoint=endpoint, account=account) from None
    except RecursionError:
        raise malformed("JSON nested too deeply to parse", account=account, endpoint=endpoint,
                        status=status) from None
    except (ValueError, UnicodeDecodeError):
        what = "an HTML page" if "html" in kind else "invalid JSON"
        raise malformed(f"expected JSON, got {what}", account=account, endpoint=endpoint,
                        status=status) from None


async def _array_at(t: _Text, key: str, endpoint: str, account: str) -> AsyncIterator[Any]:
    """:func:`json_items` on the body's text; ValueError for anything that is not JSON."""
    if await t.skip() != "{":
        # Not an object (or no body): what require() says of it, once it is known to be JSON.
        rest = await t.rest()
        require(jsonlib.loads(rest) if t.size else None, key, list, endpoint=endpoint,
                account=account)
    t.i += 1
    found = False
    problem: MalformedResponse | None = None  # raised once the whole body is known to be JSON
    c = await t.skip()
    while c != "}":
        if c != '"':
            raise ValueError("expected a member name")
        name = await t.value()
        if await t.skip() != ":":
            raise ValueError("expected ':'")
        t.i += 1
        c = await t.skip()
        if name != key:
            await t.value()
        elif found or c != "[":
            value = await t.value()
            if found:
                problem = MalformedResponse(f"field {key!r} appears twice", account=account,
                                            endpoint=endpoint)
            elif problem is None:
                try:
                    require({key: value}, key, list, endpoint=endpoint, account=account)
                except MalformedResponse as exc:
                    problem = exc
            del value
            found = True
        else:
            found = True
            t.i += 1
            c = await t.skip()
            while c != "]":
                yield await t.value()
                t.gap = 0
                c = await t.skip()
                if c == ",":
                    t.i += 1
                    if await t.skip() == "]":
                        raise ValueError("trailing comma")
                elif c != "]":
                    raise ValueError("expected ',' or ']'")
            t.i += 1
        c = await t.skip()
        if c == ",":
            t.i += 1
            c = await t.skip()
            if c != '"':
                raise ValueError("expected a member name")
        elif c != "}":
            raise ValueError("expected ',' or '}'")
    t.i += 1
    if await t.skip() != "":
        raise ValueError("extra data")
    if problem is not None:
        raise problem
    if not found:
        require({}, key, list, endpoint=endpoint, account=account)


def malformed(message: str, *, account: str, endpoint: str,
              status: int | None = None) -> MalformedResponse:
    """A MalformedResponse, counted in ``syncd_malformed_responses_total`` as it is made."""
    metrics.MALFORMED.labels(account, endpoint).inc()
    return MalformedResponse(message, account=account, endpoint=endpoint, status=status)


def refuse_declared(response: httpx.Response, limit: int, *, endpoint: str, account: str) -> None:
    """MalformedResponse for an answer whose declared ``Content-Length`` is over ``limit``."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise malformed(f"response of {int(declared)} bytes is over the {limit}-byte cap",
                        account=account, endpoint=endpoint, status=response.status_code)


def undecodable(response: httpx.Response, *, endpoint: str, account: str) -> MalformedResponse:
    encoding = response.headers.get("content-encoding", "")
    return malformed(f"body does not decode as its Content-Encoding ({encoding}) says",
                     account=account, endpoint=endpoint, status=response.status_code)


async def read_capped(response: httpx.Response, limit: int, *, endpoint: str,
                      account: str) -> None:
    """Read a streamed body into ``response`` (as ``aread`` would), decoded, refusing it as
    MalformedResponse past ``limit`` bytes or when it does not decode as its
    ``Content-Encoding`` says. Counting decoded bytes also stops a compression bomb."""
    status = response.status_code
    refuse_declared(response, limit, endpoint=endpoint, account=account)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise malformed(f"response is over the {limit}-byte cap; not read further",
                                account=account, endpoint=endpoint, status=status)
            chunks.append(chunk)
    except httpx.DecodingError:
        raise undecodable(response, endpoint=endpoint, account=account) from None
    # What ``Response.aread`` stores; ``.content``/``.text`` work as after a normal read.
    response._content = b"".join(chunks)


def _cert_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate-verification error behind an httpx connection error, if that is what
    it was (httpx and httpcore chain the ssl error as the cause)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def require(obj: Any, key: str, kind: type | tuple[type, ...], *, endpoint: str,
            account: str = "") -> Any:
    """``obj[key]`` checked for presence and type; MalformedResponse naming the field otherwise."""
    if not isinstance(obj, dict):
        raise MalformedResponse(
            f"expected an object holding {key!r}, got {type(obj).__name__}",
            account=account, endpoint=endpoint,
        )
    if key not in obj:
        raise MalformedResponse(f"missing field {key!r}", account=account, endpoint=endpoint)
    value = obj[key]
    if not isinstance(value, kind):
        raise MalformedResponse(
            f"field {key!r} is {type(value).__name__}, expected "
            + (kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)),
            account=account, endpoint=endpoint,
        )
    return value
