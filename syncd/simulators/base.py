"""What every vendor simulator shares: the clock, the control surface, faults, counters, limits.

A simulator is an ASGI app (Starlette) that stands in for one vendor account. The vendor's own
rules (paths, auth, envelopes, state machine, its rate-limit answer) live in the subclass; this
module supplies the machinery that is the same for every vendor, so a test can do the same thing
to any of them:

``/_sim/`` control surface (clearly not vendor API, no auth):

==========================================  =================================================
``POST /_sim/reset``                        back to the freshly seeded account
``POST /_sim/seed`` ``{"incidents": N}``    add N incidents quickly (benchmarks, up to 100k);
                                            ``"age_days": D`` seeds them D days in the past
``GET /_sim/calls`` / ``DELETE``            call counters per (method, route template, status)
``POST /_sim/faults`` / ``DELETE``          error_rate, error_status, latency, hang_rate,
                                            drop_rate, outage_seconds, rate_limit_rate,
                                            echo_headers_rate, echo_status, routes;
                                            answers that lie: false_gzip_rate, deep_json_rate,
                                            oversize_rate (oversize_bytes), wrong_types_rate
                                            (GET also shows ``network_latency``, the fixed
                                            delay of ``syncd sim --latency-ms``)
``POST /_sim/rate-limits``                  ``{"scale": k}`` multiplies limits, or
                                            ``{"enabled": false}`` (fast tests)
``POST /_sim/clock`` ``{"advance": s}``     move simulated time (ack timeouts, rotations)
``GET /_sim/incidents``                     incidents in canonical form (for assertions)
``POST /_sim/incidents/{id}/act``           act as a person in the UI: acknowledge, resolve,
                                            unacknowledge, reopen, severity
``POST /_sim/alerts``                       fire/resolve an alert through the vendor's intake
==========================================  =================================================

Answer faults keep the vendor's status and route but spoil the body the way broken proxies and
misbehaving vendors do: ``false_gzip`` labels the real answer ``Content-Encoding: gzip`` (it is
not), ``deep_json`` answers 200 with JSON nested ``deep_json_depth`` levels, ``oversize`` sends
the real answer behind ``oversize_bytes`` of JSON whitespace (valid, just huge, streamed without
a Content-Length), ``wrong_types`` keeps the envelope and the record ids and turns every other
field of every record into another JSON type (a number where a list was, a list where an object
was).

Dropped connections raise :class:`httpx.RemoteProtocolError` inside the app: under uvicorn that
aborts the half-sent response (the client sees the connection die), and in-process through
``httpx.ASGITransport`` the same exception reaches the client, so both paths look alike.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from syncd.simulators.validation import Operation, Problem

SIM_PREFIX = "/_sim"


class SimClock:
    """Real time plus an offset the tests can advance, so timers fire without real waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.offset += seconds


@dataclass
class Faults:
    """Injected misbehaviour. Rates are probabilities per request; ``routes`` limits them to
    route templates containing one of the given substrings (empty = every vendor route)."""

    error_rate: float = 0.0
    error_status: int = 503
    latency: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 3600.0
    drop_rate: float = 0.0
    outage_until: float = 0.0
    rate_limit_rate: float = 0.0
    false_gzip_rate: float = 0.0
    deep_json_rate: float = 0.0
    deep_json_depth: int = 100_000
    oversize_rate: float = 0.0
    oversize_bytes: int = 32 * 1024 * 1024
    wrong_types_rate: float = 0.0
    echo_headers_rate: float = 0.0
    """Answer ``echo_status`` with a page that echoes the request line and every request header,
    credentials included, as a debugging proxy, a WAF or a wrong host does."""
    echo_status: int = 400
    routes: list[str] = field(default_factory=list)

    def applies(self, route: str) -> bool:
        return not self.routes or any(r in route for r in self.routes)

    def answer_fault(self, rng: random.Random) -> str | None:
        """Which lie (if any) to tell in this answer; no draw at all when none is configured,
        so seeded runs without answer faults see the same random sequence as before."""
        rates = (("false_gzip", self.false_gzip_rate), ("deep_json", self.deep_json_rate),
                 ("oversize", self.oversize_rate), ("wrong_types", self.wrong_types_rate))
        if not any(rate for _, rate in rates):
            return None
        roll = rng.random()
        for name, rate in rates:
            if roll < rate:
                return name
            roll -= rate
        return None


class WindowLimiter:
    """Sliding-window request counter: ``hit`` returns None when allowed, else seconds to wait.

    Used for the vendors whose limits are "N per minute"; a vendor with a token bucket
    (incident.io) can use :class:`TokenBucketLimiter` instead.
    """

    def __init__(self, clock: SimClock) -> None:
        self._clock = clock
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def hit(self, key: str, bucket: str, limit: float, window: float) -> float | None:
        now = self._clock.monotonic()
        q = self._hits.setdefault((key, bucket), deque())
        while q and q[0] <= now - window:
            q.popleft()
        if len(q) >= limit:
            return max(0.001, q[0] + window - now)
        q.append(now)
        return None

    def remaining(self, key: str, bucket: str, limit: float, window: float) -> int:
        now = self._clock.monotonic()
        q = self._hits.get((key, bucket), deque())
        return max(0, int(limit) - sum(1 for t in q if t > now - window))

    def reset(self) -> None:
        self._hits.clear()


class TokenBucketLimiter:
    """Token bucket per key: ``capacity`` burst refilling at ``rate`` per second."""

    def __init__(self, clock: SimClock) -> None:
        self._clock = clock
        self._state: dict[tuple[str, str], tuple[float, float]] = {}

    def hit(self, key: str, bucket: str, capacity: float, rate: float) -> float | None:
        now = self._clock.monotonic()
        tokens, stamp = self._state.get((key, bucket), (capacity, now))
        tokens = min(capacity, tokens + (now - stamp) * rate)
        if tokens < 1:
            self._state[(key, bucket)] = (tokens, now)
            return (1 - tokens) / rate
        self._state[(key, bucket)] = (tokens - 1, now)
        return None

    def remaining(self, key: str, bucket: str, capacity: float, rate: float) -> int:
        now = self._clock.monotonic()
        tokens, stamp = self._state.get((key, bucket), (capacity, now))
        return int(min(capacity, tokens + (now - stamp) * rate))

    def reset(self) -> None:
        self._state.clear()



def _refusing(handler: Callable[[Request], Awaitable[Response]]
              ) -> Callable[[Request], Awaitable[Response]]:
    """A control handler whose bad input (not JSON, a wrong type, an unknown state) is a 400
    naming the problem, never a 500: benchmarks and people drive /_sim/ by hand."""

    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            return JSONResponse({"error": f"bad control request: {exc}"}, status_code=400)

    return handle


class Simulator:
    """Base class. Subclasses set ``vendor`` and implement the hooks below."""

    vendor: ClassVar[str] = ""
    operations: ClassVar[Mapping[str, Operation]] = {}
    """What each implemented operation accepts, keyed ``"METHOD /route/{template}"``: checked
    by :meth:`validate` before the handler runs (see syncd/simulators/validation.py)."""

    def __init__(self, *, seed: int = 0, rate_limits: bool = True) -> None:
        self.clock = SimClock()
        self.random = random.Random(seed)
        self.seed = seed
        self.faults = Faults()
        # A fixed delay before every vendor call (``syncd sim --latency-ms``): a WAN round
        # trip on purpose. Unlike ``faults.latency`` it survives /_sim/reset and fault clears.
        self.network_latency = 0.0
        self.calls: Counter[tuple[str, str, int]] = Counter()
        # Vendor calls being answered right now, and the most at once since the last clear:
        # what shows whether a client keeps several requests in flight.
        self.inflight = 0
        self.peak_inflight = 0
        self.write_log: list[WriteEntry] = []
        self._after_writes: list[Callable[[], object]] = []  # see after_next_write
        self.after_write_errors: list[Exception] = []  # what those actions raised
        self.inflight_by_route: Counter[str] = Counter()  # route template -> being answered
        self.rate_limits_enabled = rate_limits
        self.rate_scale = 1.0
        self.window = WindowLimiter(self.clock)
        self.tokens = TokenBucketLimiter(self.clock)
        self.reset()
        self._vendor_routes = list(self.routes())
        self.app = Starlette(routes=[*self._control_routes(), *self._vendor_routes])
        self.app.add_middleware(_SimMiddleware, sim=self)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ vendor hooks

    def routes(self) -> Iterable[BaseRoute]:
        """The vendor's API routes."""
        raise NotImplementedError

    def reset(self) -> None:
        """(Re)create the seeded account: users, teams, schedules, catalogues, no incidents."""
        raise NotImplementedError

    def seed_incidents(self, count: int, *, state: str = "triggered",
                       age_days: float = 0.0) -> list[str]:
        """Add ``count`` incidents fast (no per-incident HTTP); return their ids. ``age_days``
        moves every seeded timestamp that far into the past: a backlog nobody touched lately,
        which is what a vendor's updated-since filter (incident.io's compares dates) skips."""
        raise NotImplementedError

    def describe(self, base_url: str) -> dict[str, Any]:
        """The JSON line ``syncd sim`` prints: vendor, base_url, credentials, users, intake."""
        raise NotImplementedError

    def canonical_incidents(self) -> list[dict[str, Any]]:
        """Every incident as ``{id, state, severity, dedup, title, updated_at}`` (canonical
        values: triggered/acknowledged/resolved, sev1..sev5 or None)."""
        raise NotImplementedError

    def act(self, incident_id: str, action: str, **kw: Any) -> dict[str, Any]:
        """A person acting in the vendor's UI; the vendor's own state machine applies.
        Raises KeyError (unknown incident) or ValueError (not allowed in this vendor)."""
        raise NotImplementedError

    def alert(self, *, dedup: str, title: str, action: str = "trigger",
              severity: str | None = None) -> dict[str, Any]:
        """An alert arriving the way monitoring tools send them (events API, REST endpoint,
        webhook), going through the same code as the HTTP intake route."""
        raise NotImplementedError

    def tick(self) -> None:
        """Run timers that are due at ``self.clock.now()`` (ack timeouts, auto-resolve)."""

    def rate_limited(self, request: Request, retry_after: float) -> Response:
        """The vendor's own rate-limit answer (status, headers, body)."""
        raise NotImplementedError

    def invalid(self, problems: list[Problem]) -> Response:
        """The vendor's answer to a request that fails its operation's schema."""
        raise NotImplementedError

    @classmethod
    def account_table(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        """The ``[accounts.NAME]`` config keys for one of this simulator's describe() lines."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses

    async def validate(self, request: Request) -> Response | None:
        """Check the request against its operation (body and query); the vendor's error
        response when it fails, None when it passes or the operation declares nothing."""
        route = request.scope.get("sim.route") or self.route_template(request.scope)
        op = self.operations.get(f"{request.method} {route}")
        if op is None:
            return None
        raw = await request.body() if op.body is not None else None
        problems = op.check(request.query_params, raw)
        if not problems:
            return None
        return op.answer(problems) if op.answer else self.invalid(problems)

    def limit(self, key: str, bucket: str, limit: float, window: float) -> float | None:
        """Sliding-window check honouring the rate-limit override; None means allowed."""
        if not self.rate_limits_enabled:
            return None
        return self.window.hit(key, bucket, limit * self.rate_scale, window)

    def call_count(self, *, method: str | None = None, route: str | None = None,
                   status: int | None = None) -> int:
        return sum(
            n
            for (m, r, s), n in self.calls.items()
            if (method is None or m == method)
            and (route is None or r == route)
            and (status is None or s == status)
        )

    def writes(self) -> int:
        """Calls that could change vendor state (anything but GET)."""
        return sum(n for (m, _r, _s), n in self.calls.items() if m != "GET")

    def after_next_write(self, action: Callable[[], object]) -> None:
        """Run ``action`` (a person acting, :meth:`act`) once, right after the vendor has
        answered the next write call that it took (its app answered 2xx: a write it refused or
        rate limited changed nothing, nor did one an injected fault answered without calling
        the app, even with a 2xx such as ``deep_json``'s 200 or a 2xx ``echo_status``; such a
        write leaves the action for the next one): between a client's write and the reads
        that confirm it, a window no sleep in a test can hit reliably. In process
        (:meth:`transport`) the client gets the answer only after the action ran; through a
        threaded loopback server the answer is on the socket first, so the client may read
        before the person acts. What the action raises never replaces the write's answer: it
        is kept in :attr:`after_write_errors` for the test to check."""
        self._after_writes.append(action)

    def _after_write(self, status: int) -> None:
        """``status``: the app's answer to a write, 0 when the app never got it."""
        if not self._after_writes or not 200 <= status < 300:
            return
        try:
            self._after_writes.pop(0)()
        except Exception as exc:  # the test's action, not the vendor's answer
            self.after_write_errors.append(exc)

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    def client(self, **kw: Any) -> httpx.AsyncClient:
        """An httpx client talking to this simulator in-process."""
        kw.setdefault("base_url", "http://sim.localhost")
        return httpx.AsyncClient(transport=self.transport(), **kw)

    # ------------------------------------------------------------------ control surface

    def _control_routes(self) -> list[Route]:
        p = SIM_PREFIX
        return [
            Route(f"{p}/reset", _refusing(self._c_reset), methods=["POST"]),
            Route(f"{p}/seed", _refusing(self._c_seed), methods=["POST"]),
            Route(f"{p}/calls", _refusing(self._c_calls), methods=["GET", "DELETE"]),
            Route(f"{p}/faults", _refusing(self._c_faults), methods=["GET", "POST", "DELETE"]),
            Route(f"{p}/rate-limits", _refusing(self._c_rate_limits), methods=["POST"]),
            Route(f"{p}/clock", _refusing(self._c_clock), methods=["GET", "POST"]),
            Route(f"{p}/incidents", _refusing(self._c_incidents), methods=["GET"]),
            Route(f"{p}/incidents/{{id}}/act", _refusing(self._c_act), methods=["POST"]),
            Route(f"{p}/alerts", _refusing(self._c_alert), methods=["POST"]),
        ]

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("control body must be a JSON object")
        return data

    async def _c_reset(self, request: Request) -> Response:
        self.reset()
        self.faults = Faults()
        self.calls.clear()
        self.window.reset()
        self.tokens.reset()
        return JSONResponse({"ok": True})

    async def _c_seed(self, request: Request) -> Response:
        body = await self._body(request)
        count = int(body.get("incidents", 0))
        if not 0 <= count <= 100_000:
            return JSONResponse({"error": "incidents must be 0..100000"}, status_code=400)
        age = float(body.get("age_days", 0))
        if not 0 <= age <= 3650:
            return JSONResponse({"error": "age_days must be 0..3650"}, status_code=400)
        ids = self.seed_incidents(count, state=str(body.get("state", "triggered")),
                                  age_days=age)
        return JSONResponse({"ok": True, "created": len(ids), "ids": ids[:1000]})

    async def _c_calls(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.calls.clear()
            self.peak_inflight = self.inflight
            return JSONResponse({"ok": True})
        rows = [
            {"method": m, "route": r, "status": s, "count": n}
            for (m, r, s), n in sorted(self.calls.items())
        ]
        return JSONResponse(
            {"calls": rows, "total": sum(self.calls.values()), "writes": self.writes()}
        )

    async def _c_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults = Faults()
        elif request.method == "POST":
            body = await self._body(request)
            outage = float(body.pop("outage_seconds", 0) or 0)
            try:
                self.faults = Faults(**body)
            except TypeError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            if outage:
                self.faults.outage_until = self.clock.monotonic() + outage
        f = self.faults
        return JSONResponse({**f.__dict__, "outage_remaining": max(
            0.0, f.outage_until - self.clock.monotonic()),
            "network_latency": self.network_latency})

    async def _c_rate_limits(self, request: Request) -> Response:
        body = await self._body(request)
        if "enabled" in body:
            self.rate_limits_enabled = bool(body["enabled"])
        if "scale" in body:
            self.rate_scale = float(body["scale"])
        self.window.reset()
        self.tokens.reset()
        return JSONResponse({"enabled": self.rate_limits_enabled, "scale": self.rate_scale})

    async def _c_clock(self, request: Request) -> Response:
        if request.method == "POST":
            body = await self._body(request)
            self.clock.advance(float(body.get("advance", 0)))
            self.tick()
        return JSONResponse({"now": self.clock.now().isoformat(), "offset": self.clock.offset})

    async def _c_incidents(self, request: Request) -> Response:
        return JSONResponse({"incidents": self.canonical_incidents()})

    async def _c_act(self, request: Request) -> Response:
        body = await self._body(request)
        action = str(body.pop("action", ""))
        try:
            result = self.act(request.path_params["id"], action, **body)
        except KeyError as exc:
            return JSONResponse({"error": f"no incident {exc}"}, status_code=404)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        return JSONResponse(result)

    async def _c_alert(self, request: Request) -> Response:
        body = await self._body(request)
        try:
            result = self.alert(**body)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(result)

    def route_template(self, scope: Scope) -> str | None:
        for route in self._vendor_routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "path", None)
        return None


@dataclass(frozen=True, slots=True)
class WriteEntry:
    """One write call as the vendor received it: wall time of arrival, route, answer and the
    client's User-Agent (a syncd replica names itself there), so tests can tell who wrote
    when."""

    at: float
    method: str
    route: str
    status: int
    agent: str


class _SimMiddleware:
    """Counts vendor calls by route template and applies injected faults before the vendor."""

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sim = self.sim
        sim.tick()
        if scope["path"].startswith(SIM_PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        route = sim.route_template(scope) or "(unmatched)"
        scope["sim.route"] = route
        method = scope["method"]
        status_box = [0]
        took = [False]  # the vendor's app got the request, not only an injected fault
        arrived = time.time()
        sim.inflight_by_route[route] += 1

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        f = sim.faults
        sim.inflight += 1
        sim.peak_inflight = max(sim.peak_inflight, sim.inflight)
        try:
            if sim.network_latency:
                await anyio.sleep(sim.network_latency)
            if f.applies(route):
                if f.latency:
                    await anyio.sleep(f.latency)
                if f.outage_until > sim.clock.monotonic():
                    await _html_error(503, "Service Unavailable")(scope, receive, counting_send)
                    return
                roll = sim.random.random()
                if roll < f.hang_rate:
                    await anyio.sleep(f.hang_seconds)
                roll -= f.hang_rate
                if roll >= 0 and roll < f.drop_rate:
                    status_box[0] = -1
                    # Start a response, then abort it: uvicorn closes the socket mid-response.
                    await send({"type": "http.response.start", "status": 200, "headers": []})
                    raise httpx.RemoteProtocolError("simulator dropped the connection")
                roll -= f.drop_rate
                if roll >= 0 and roll < f.error_rate:
                    await _html_error(f.error_status, "Injected fault")(
                        scope, receive, counting_send
                    )
                    return
                roll -= f.error_rate
                if roll >= 0 and roll < f.rate_limit_rate:
                    response = sim.rate_limited(Request(scope, receive), 5.0)
                    await response(scope, receive, counting_send)
                    return
                roll -= f.rate_limit_rate
                if roll >= 0 and roll < f.echo_headers_rate:
                    await _echo_headers(f.echo_status, scope)(scope, receive, counting_send)
                    return
                lie = f.answer_fault(sim.random)
                if lie == "deep_json":
                    depth = max(1, f.deep_json_depth)
                    await Response(b"[" * depth + b"]" * depth, media_type="application/json")(
                        scope, receive, counting_send)
                    return
                if lie is not None:
                    took[0] = True
                    await self.app(scope, receive, _LyingSend(counting_send, lie, f))
                    return
            took[0] = True
            await self.app(scope, receive, counting_send)
        finally:
            sim.inflight -= 1
            sim.inflight_by_route[route] -= 1
            sim.calls[(method, route, status_box[0])] += 1
            if method != "GET":
                agent = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                              if k == b"user-agent"), "")
                sim.write_log.append(WriteEntry(arrived, method, route, status_box[0], agent))
                sim._after_write(status_box[0] if took[0] else 0)


class _LyingSend:
    """An ASGI ``send`` that spoils the vendor's answer on its way out (see the module doc)."""

    def __init__(self, send: Send, lie: str, faults: Faults) -> None:
        self.send = send
        self.lie = lie
        self.faults = faults
        self.start: dict[str, Any] | None = None
        self.body: list[bytes] = []

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.start = dict(message)
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.body.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(self.body)
        headers = [(k, v) for k, v in self.start.get("headers", [])
                   if k.lower() != b"content-length"]
        if self.lie == "false_gzip":
            headers = [(k, v) for k, v in headers if k.lower() != b"content-encoding"]
            headers.append((b"content-encoding", b"gzip"))
        elif self.lie == "wrong_types":
            body = _wrong_types_body(body)
        if self.lie == "oversize":
            await self.send({**self.start, "headers": headers})  # chunked: no Content-Length
            chunk = b" " * 65536
            for _ in range(max(0, self.faults.oversize_bytes) // len(chunk) + 1):
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
            await self.send({"type": "http.response.body", "body": body})
            return
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


_KEPT_IDS = frozenset({"id", "incidentNumber", "incident_number"})
"""Record ids stay as they were, so a client gets past "which record is this" into the fields."""


def _wrong_types_body(body: bytes) -> bytes:
    """The envelope kept (its lists and objects), every field but the id of every record in it
    turned into another JSON type; a body that is not JSON goes out unchanged."""
    try:
        data = json.loads(body)
    except ValueError:
        return body

    def other(value: Any) -> Any:
        if isinstance(value, str):
            return {"unexpected": "object"}
        if isinstance(value, dict):
            return ["unexpected", "list"]
        if isinstance(value, list) or value is None:
            return 12345
        return "unexpected"  # numbers and booleans

    def record(value: Any) -> Any:
        if not isinstance(value, dict):
            return other(value)
        return {k: v if k in _KEPT_IDS else other(v) for k, v in value.items()}

    def records(value: Any) -> Any:
        if isinstance(value, list):
            return [record(v) for v in value]
        return record(value) if isinstance(value, dict) else value

    if isinstance(data, dict):
        data = {k: records(v) for k, v in data.items()}
    elif isinstance(data, list):
        data = records(data)
    return json.dumps(data).encode()


def _html_error(status: int, text: str) -> Response:
    # Load balancers in front of real vendors answer 5xx with HTML, not the vendor's JSON.
    body = f"<html><head><title>{status} {text}</title></head><body>{text}</body></html>"
    return Response(body, status_code=status, media_type="text/html")


def _echo_headers(status: int, scope: Scope) -> Response:
    lines = [f"Bad request: {scope['method']} {scope['path']}", "Request headers:"]
    lines += [f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in scope["headers"]]
    return Response("\n".join(lines) + "\n", status_code=status, media_type="text/plain")


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 with a Z, the way vendors render UTC timestamps."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    """ISO 8601 (date or date-time, Z or offset) to an aware datetime; ValueError otherwise."""
    text = value.strip().replace("Z", "+00:00").replace(" ", "+")
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
