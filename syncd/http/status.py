"""The status server: ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus) and ``/status`` (JSON).

It listens on loopback by default; it exposes no secret (``/status`` is built from the redacted
ledger views, ``/metrics`` is redacted too, the ledger URL has its password removed) and no write
operation. uvicorn logs through syncd's structlog configuration (redacted, in the chosen format).

Reads answer only a ``Host`` that names this server (:mod:`syncd.http.hosts`: DNS rebinding).

- ``/healthz``: the process is alive and its event loop answers.
- ``POST /webhooks/ACCOUNT``: a vendor webhook (PagerDuty v3, incident.io/Svix), verified
  against the account's ``webhook_secret`` and taken as a hint to poll that account soon
  (:mod:`syncd.http.intake` bounds what a stranger can make it spend).
- ``/readyz``: the ledger is writable (else the reason: ``disk full``, ``locked``, ...) and every
  account polled successfully recently (within ``stale_after``, default three poll intervals).
  503 with the reasons otherwise, so a load balancer or a systemd ExecStartPost check can tell
  "up" from "doing its job".
  A standby replica (PostgreSQL ledger, another replica holds the lease) is ready when its
  ledger is: 200 with ``"role": "standby"``, so a load balancer may still route webhooks to it
  (they poll nothing there: the leader polls on its own schedule).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from syncd import __version__, secrets, views
from syncd.engine.cadence import Cadence
from syncd.http import guard
from syncd.http.descriptors import connection_cap
from syncd.http.hosts import HostCheck, HostPolicy, machine_names
from syncd.http.intake import WebhookIntake
from syncd.ledger import LedgerError, LedgerWriteError, utcnow

if TYPE_CHECKING:
    from syncd.daemon import Daemon

def build_app(daemon: Daemon, policy: HostPolicy | None = None) -> Starlette:
    """The status app; ``policy`` (default: this machine's names, looked up now) decides which
    ``Host`` a read may name."""
    cfg = daemon.config

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        problems = []
        if daemon.ledger.failure is not None:
            # Known already: no probe to queue behind jobs waiting on a locked ledger.
            problems.append(f"ledger not writable: {daemon.ledger.failure}")
        else:
            try:
                await daemon.ledger.read(lambda tx: tx.probe_write())
            except LedgerWriteError as exc:
                problems.append(f"ledger not writable: {exc.reason}")
            except Exception as exc:  # any database failure means not ready
                problems.append(f"ledger not writable: {type(exc).__name__}")
        role: dict[str, Any] = {}
        if daemon.leadership is not None:
            try:
                role = await daemon.leadership.describe()
            except Exception as exc:
                role = {"role": daemon.leadership.role}
                problems.append(f"lease unreadable: {type(exc).__name__}")
        now = utcnow()
        for name in cfg.accounts if daemon.leading else ():
            cadence = Cadence.of(cfg, name)
            # Polls the daemon put off on purpose (pushes first) are not a stale account, nor
            # is the poll after them while its reads wait for the pushes (push_patience).
            stretched = daemon.health.stretched.get(name, 0)
            limit = cadence.stale_after + timedelta(seconds=(
                cadence.poll_interval * stretched + (cadence.push_patience if stretched else 0)))
            last = daemon.health.last_poll.get(name)
            if daemon.health.auth_failed.get(name):
                problem = daemon.health.auth_problem.get(name) or "authentication failed"
                problems.append(f"{name}: {problem}")
            elif last is None:
                problems.append(f"{name}: no successful poll yet")
            elif now - last > limit:
                problems.append(
                    f"{name}: last successful poll {(now - last).total_seconds():.0f}s ago")
        if daemon.health.stopping:
            problems.append("stopping")
        if problems:
            return JSONResponse(_jsonable({"ready": False, "problems": problems, **role}),
                                status_code=503)
        return JSONResponse(_jsonable({"ready": True, **role}))

    async def metrics(request: Request) -> Response:
        text = secrets.redact(generate_latest().decode())
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def status(request: Request) -> Response:
        try:
            data = await daemon.ledger.read(views.status, cfg)
        except LedgerError as exc:
            return JSONResponse({"error": secrets.redact(str(exc))}, status_code=503)
        if daemon.leadership is not None:
            data["role"] = daemon.leadership.role
            data["replica"] = daemon.leadership.lease.holder
        data["version"] = __version__
        data["started_at"] = daemon.health.started_at
        data["budgets"] = {
            name: client.budget.snapshot() for name, client in daemon.engine.clients.items()
        }
        return JSONResponse(_jsonable(data))

    verifiers = {
        name: client.verify_webhook  # type: ignore[attr-defined]
        for name, client in daemon.engine.clients.items()
        if getattr(cfg.accounts[name], "webhook_secret", None) is not None
        and hasattr(client, "verify_webhook")
    }
    notes = {name: daemon.engine.clients[name].note_webhook  # type: ignore[attr-defined]
             for name in verifiers if hasattr(daemon.engine.clients[name], "note_webhook")}

    def hint(account: str) -> str:
        """A standby drops the hint (counted as ``standby``): the leader polls on its own."""
        return daemon.poll_soon(account) if daemon.leading else "standby"

    webhook = WebhookIntake(verifiers, hint, notes)

    if policy is None:
        policy = HostPolicy.of(cfg.status.listen, cfg.status.allowed_hosts, machine_names())
    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/status", status),
        Route("/webhooks/{account}", webhook.handle, methods=["POST"]),
    ], middleware=[Middleware(HostCheck, policy=policy)])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def bind(listen: str) -> list[socket.socket]:
    """The status server's listening sockets, bound before the daemon starts anything: a daemon
    whose port is taken would run without /healthz, /readyz and its webhook routes, which only
    looks started. Bound as asyncio's ``create_server`` (what uvicorn used) binds a host: every
    address it resolves to (``localhost`` is ``::1`` and ``127.0.0.1``), IPv6 sockets
    IPv6-only, so ``[::]`` or ``[::1]`` never also takes IPv4 addresses it was not given.
    Raises OSError (address in use, not local, permission denied)."""
    host, _, port = listen.rpartition(":")
    infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what uvicorn sets
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(guard.BACKLOG)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def server(daemon: Daemon, policy: HostPolicy | None = None) -> uvicorn.Server:
    """The status server, bounded by :mod:`syncd.http.guard` so that strangers on the port
    cannot take the descriptors, memory or time that syncing needs."""
    host, _, port = daemon.config.status.listen.rpartition(":")
    cap = connection_cap()
    config = uvicorn.Config(
        build_app(daemon, policy), host=host.strip("[]"), port=int(port), log_level="warning",
        access_log=False, lifespan="off", ws="none",
        http=guard.GuardedH11Protocol.capped(cap), backlog=guard.BACKLOG,
        timeout_keep_alive=int(guard.KEEP_ALIVE),
        h11_max_incomplete_event_size=guard.MAX_HEAD_BYTES,
        # No dictConfig of uvicorn's own: its loggers propagate to the root handler, so their
        # lines (tracebacks too) are rendered and redacted like every other event.
        log_config=None,
    )
    return _Server(config)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to syncd. ``serve`` installs handlers of its own
    for SIGINT and SIGTERM (``capture_signals``, uvicorn >= 0.29, pinned >= 0.30): they stopped
    the status server alone on a SIGINT syncd leaves ignored, and raised a caught SIGTERM again
    once serving ended, a second stop signal to syncd that cut its drain short."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
