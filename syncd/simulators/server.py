"""Serving a simulator over real HTTP on loopback (``syncd sim``, the demo, benchmarks, tests)."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from syncd.simulators.base import Simulator


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket whose accepted connections have Nagle's algorithm off.

    asyncio turns TCP_NODELAY on only for sockets whose ``proto`` is IPPROTO_TCP, and an
    accepted socket copies the listener's; a ``proto`` of 0 left Nagle on, so every keep-alive
    request after the first waited ~40 ms for the client's delayed ACK (h11 writes headers and
    body separately). Linux also copies TCP_NODELAY itself from the listener to accepted sockets.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def config(sim: Simulator, sock: socket.socket, **kw: object) -> uvicorn.Config:
    return uvicorn.Config(
        sim.app, log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=1, **kw,  # type: ignore[arg-type]
    )


@dataclass
class Running:
    """A simulator served from a background thread; ``stop()`` shuts it down."""

    sim: Simulator
    base_url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)

    def describe(self) -> dict[str, object]:
        return self.sim.describe(self.base_url)


def start_in_thread(sim: Simulator, host: str = "127.0.0.1", port: int = 0, *,
                    certfile: str | None = None, keyfile: str | None = None) -> Running:
    """Serve ``sim`` on ``host:port`` (0 = a free port) and return once it accepts connections;
    over HTTPS with ``certfile``/``keyfile``."""
    sock = _bind(host, port)
    tls = {"ssl_certfile": certfile, "ssl_keyfile": keyfile} if certfile else {}
    server = uvicorn.Server(config(sim, sock, **tls))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"sim-{sim.vendor}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"simulator {sim.vendor} did not start on {host}:{port}")
        time.sleep(0.01)
    real_port = sock.getsockname()[1]
    scheme = "https" if certfile else "http"
    return Running(sim, f"{scheme}://{host}:{real_port}", server, thread)


def serve_forever(sim: Simulator, host: str, port: int, *, certfile: str | None = None,
                  keyfile: str | None = None) -> None:
    """Foreground server for ``syncd sim``: prints the describe() JSON line once listening.

    With ``certfile``/``keyfile`` it serves HTTPS, for clients that refuse plain HTTP (the
    official ``pagerduty`` client only accepts https base URLs)."""
    sock = _bind(host, port)
    tls = {"ssl_certfile": certfile, "ssl_keyfile": keyfile} if certfile else {}
    server = uvicorn.Server(config(sim, sock, **tls))
    scheme = "https" if certfile else "http"
    base_url = f"{scheme}://{host}:{sock.getsockname()[1]}"

    original_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets=sockets)
        print(json.dumps(sim.describe(base_url)), flush=True)

    server.startup = startup  # type: ignore[method-assign]
    server.run(sockets=[sock])
