"""Which ``Host`` a read of the status server may name: the defence against DNS rebinding.

A page on an attacker's domain whose name they re-point at 127.0.0.1 (or at the address syncd
listens on) is, to the browser, the attacker's own origin: its scripts may read the answers, and
``/status`` names on-call people and parked values. The browser still sends the attacker's name
as ``Host``, so the read routes answer only a ``Host`` that is

- an IP address (a rebinding page is always reached by a name; a browser sends an address as
  ``Host`` only for a page loaded from that address),
- ``localhost`` (browsers resolve it, and ``*.localhost``, to loopback themselves),
- the host of ``[status] listen`` when it is a name, or
- a name in ``[status] allowed_hosts`` (the names monitoring and load balancers use);

anything else gets ``421 Misdirected Request``. A status server bound to every address
(``0.0.0.0`` or ``[::]``) without ``allowed_hosts`` answers any ``Host``: binding publicly is an
explicit choice, the names it is reached by are not known to syncd, and the firewall that
``docs/security.md`` asks for is then the boundary; list the names to get the check there too.

``POST /webhooks/...`` is not checked: deliveries are authenticated by their signature, which a
rebinding page cannot make, their answers carry nothing (202 or the same 401 for every refusal),
and a reverse proxy in front often forwards the public name the vendor posted to.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

WILDCARDS = frozenset({"0.0.0.0", "::", ""})
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


class HostPolicy:
    """The names a read may carry as ``Host``; ``None`` as :attr:`names` means any."""

    def __init__(self, listen_host: str, allowed: Iterable[str] = ()) -> None:
        listen = host_name(listen_host)
        extra = {host_name(name) for name in allowed}
        if listen in WILDCARDS and not extra:
            self.names: frozenset[str] | None = None
        else:
            self.names = frozenset({"localhost", listen, *extra} - WILDCARDS)

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
    """ASGI middleware: every request but ``POST /webhooks/...`` must pass :class:`HostPolicy`."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._webhook(scope) or self.policy.allows(_host(scope)):
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 421,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(REFUSAL)).encode())]})
        await send({"type": "http.response.body", "body": REFUSAL})

    @staticmethod
    def _webhook(scope: Scope) -> bool:
        return scope["method"] == "POST" and str(scope["path"]).startswith("/webhooks/")


def _host(scope: dict[str, Any]) -> str | None:
    for key, value in scope["headers"]:
        if key == b"host":
            return bytes(value).decode("latin-1")
    return None
