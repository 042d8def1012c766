"""Which ``Host`` a read of the status server may name: the defence against DNS rebinding.

A page on an attacker's domain whose name they re-point at 127.0.0.1 (or at the address syncd
listens on) is, to the browser, the attacker's own origin: its scripts may read the answers, and
``/status`` names on-call people and parked values. The browser runs inside the network, so a
firewall does not stop it: rebinding is a firewall bypass. The browser still sends the
attacker's name as ``Host``, so the read routes answer only a ``Host`` that is

- an IP address (a rebinding page is always reached by a name; a browser sends an address as
  ``Host`` only for a page loaded from that address),
- ``localhost`` (browsers resolve it, and ``*.localhost``, to loopback themselves),
- the host of ``[status] listen`` when it is a name,
- this machine's dotted names, ``socket.gethostname()`` and ``socket.getfqdn()`` (what
  Prometheus scrapes by), or
- a name in ``[status] allowed_hosts`` (the names monitoring and load balancers use);

anything else gets ``421 Misdirected Request`` and a warning naming the ``Host`` (throttled with
every repeated warning, :mod:`syncd.logthrottle`), so "target down" has its cause in the
journal. This holds for a wildcard bind (``0.0.0.0``, ``[::]``) too; ``allowed_hosts = ["*"]``
turns the check off.

The machine's names are safe to allow because rebinding needs the attacker to answer the
browser's DNS query for the name in the URL: for a name in a zone the machine's owners run
(``node-1.corp.example``) only they answer. Not so for ``*.local`` names, which any host on the
link answers by multicast DNS, nor for a short name without a dot (``node-1``): a Windows
browser that does not find it in DNS asks the link by LLMNR or NetBIOS, and any host there may
answer, as with mDNS. Both are left out (list one in ``allowed_hosts`` to use it: that is then
the operator's call, for a network where no such client shares a link with an attacker). We
left the short name out rather than only documenting the gap: which clients share a link with
whom is not something syncd can see, and the FQDN or ``allowed_hosts`` costs one line. A
machine named in a domain its owners do not hold (``syncd.dev`` registered by someone else)
would let that domain's owner in; name machines in your own domains.

``GET /healthz`` is not checked: it answers ``ok`` and nothing else, so a rebinding page learns
only that syncd runs, and liveness probes that send a container's or Service's name as ``Host``
(Compose service names, Kubernetes Services) keep working without ``allowed_hosts``. ``/readyz``
stays checked: its 503 names accounts, their errors and the replica; the probes that use it send
an address (kubelet: the pod IP) or ``localhost`` (the container's HEALTHCHECK), which pass.

``POST /webhooks/...`` is not checked: deliveries are authenticated by their signature, which a
rebinding page cannot make, their answers carry nothing (202 or the same 401 for every refusal),
and a reverse proxy in front often forwards the public name the vendor posted to.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import threading
from collections.abc import Iterable
from typing import Any

import anyio
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

log = structlog.get_logger(__name__)

WILDCARDS = frozenset({"0.0.0.0", "::", ""})
ANY = "*"
"""The ``allowed_hosts`` entry that turns the check off."""
LOOKUP_WAIT = 2.0
"""Seconds the status server waits for :func:`machine_names` before it serves without them."""
REFUSAL = b"421 Misdirected Request: this Host is not one the status server answers " \
    b"(see [status] allowed_hosts)\n"


def host_name(header: str) -> str:
    """The host part of a ``Host`` header, lower case, without port, brackets or final dot."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        header = header.partition(":")[0]
    return header.rstrip(".")


@functools.cache
def machine_names() -> frozenset[str]:
    """This machine's names (``gethostname``, ``getfqdn``), looked up once per process, less
    those anyone on the link can answer for: multicast-DNS ``*.local`` names and short names
    without a dot (LLMNR, NetBIOS)."""
    return _safe({socket.gethostname(), socket.getfqdn()})


def short_names() -> frozenset[str]:
    """``gethostname`` alone (no DNS): what a read may name while :func:`machine_names` is
    still waiting for the resolver. Not cached, so the full names replace it once known."""
    return _safe({socket.gethostname()})


def _safe(names: Iterable[str]) -> frozenset[str]:
    found = {host_name(name) for name in names}
    return frozenset(n for n in found if "." in n and not n.endswith(".local"))


async def look_up_machine_names() -> frozenset[str]:
    """:func:`machine_names` in a daemon thread: ``getfqdn`` may wait on a resolver that does
    not answer, and neither the event loop nor a stop may wait with it. An abandoned anyio
    worker thread would still be joined when the interpreter exits, holding up the exit. The
    loop looks at the thread every 50 ms rather than being called back from it, so a thread
    that ends after the loop has closed has nothing to report into (and nothing to fail)."""
    found: list[frozenset[str]] = []

    def work() -> None:
        with contextlib.suppress(Exception):  # a resolver error: the short names stand
            found.append(machine_names())

    thread = threading.Thread(target=work, name="syncd-machine-names", daemon=True)
    thread.start()
    while thread.is_alive():  # noqa: ASYNC110 (an Event cannot be set from that thread)
        await anyio.sleep(0.05)
    return found[0] if found else short_names()


class HostPolicy:
    """The names a read may carry as ``Host``; ``None`` as :attr:`names` means any."""

    def __init__(self, listen_host: str, allowed: Iterable[str] = (),
                 machine: Iterable[str] = ()) -> None:
        extra = {host_name(name) for name in allowed}
        if ANY in extra:
            self.names: frozenset[str] | None = None
        else:
            names = {"localhost", host_name(listen_host), *extra, *machine}
            self.names = frozenset(names - WILDCARDS)

    @classmethod
    def of(cls, listen: str, allowed: Iterable[str], machine: Iterable[str]) -> HostPolicy:
        """The policy of ``[status]`` (its ``listen`` as ``host:port``)."""
        return cls(listen.rpartition(":")[0], allowed, machine)

    def learn(self, machine: Iterable[str]) -> None:
        """Add names of this machine found late (a slow resolver at start-up)."""
        if self.names is not None:
            self.names = self.names | frozenset(machine)

    def listing(self) -> list[str]:
        """The names for the log: ``["*"]`` when the check is off."""
        return [ANY] if self.names is None else sorted(self.names)

    def allows(self, header: str | None) -> bool:
        if self.names is None or header is None:
            return True  # HTTP/1.0 without Host: no browser sends that
        name = host_name(header)
        if name in self.names or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


class HostCheck:
    """ASGI middleware: every request but ``POST /webhooks/...`` and ``GET /healthz`` must pass
    :class:`HostPolicy`."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = None if scope["type"] != "http" else _host(scope)
        if scope["type"] != "http" or self._unchecked(scope) or self.policy.allows(host):
            await self.app(scope, receive, send)
            return
        # A warning, so the log's repeat throttle bounds what a flood of these writes.
        log.warning("status.host_refused", host=_printable(host or ""),
                    path=_printable(str(scope["path"])),
                    hint="add the name to [status] allowed_hosts if it is yours")
        await send({"type": "http.response.start", "status": 421,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(REFUSAL)).encode())]})
        await send({"type": "http.response.body", "body": REFUSAL})

    @staticmethod
    def _unchecked(scope: Scope) -> bool:
        """A signed webhook delivery, or the liveness probe (it reveals nothing)."""
        method, path = scope["method"], str(scope["path"])
        return (method == "POST" and path.startswith("/webhooks/")) or (
            method in ("GET", "HEAD") and path == "/healthz")


def _host(scope: dict[str, Any]) -> str | None:
    for key, value in scope["headers"]:
        if key == b"host":
            return bytes(value).decode("latin-1")
    return None


def _printable(text: str, limit: int = 200) -> str:
    """A caller's text for the log: printable characters only, at most ``limit`` of them."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])
