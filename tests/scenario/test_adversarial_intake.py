"""The status port and webhook intake against a hostile caller (issues 18 and 20).

Everything here talks to the real app, the real verifiers, the real scheduler and simulators:
fuzzed headers never reach a 500, bodies are bounded before they are read, unknown accounts look
like bad signatures, a flood of valid deliveries does not become vendor load, and a flood of idle
connections does not take the descriptors vendor traffic needs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers
from test_webhooks import II_SECRET, PD_SECRET, free_port
from world import World

from syncd.daemon import Daemon
from syncd.http.status import build_app

HEADER_NAMES = [
    b"x-pagerduty-signature", b"webhook-id", b"webhook-timestamp", b"webhook-signature",
    b"svix-id", b"svix-timestamp", b"svix-signature", b"content-type", b"x-webhook-id",
]


def hooked_world(tmp_path: Path, *, status: bool = False, poll_interval: float = 3600) -> World:
    """pd (PagerDuty v3) and ii (incident.io/Svix) with webhook secrets, vo without."""
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio", "vo": "victorops"},
              [{"name": "g", "accounts": ["pd", "ii", "vo"]}], poll_interval=poll_interval,
              account_extra={"pd": {"webhook_secret": PD_SECRET},
                             "ii": {"webhook_secret": II_SECRET}})
    if status:
        w.port = free_port()  # type: ignore[attr-defined]
        text = w.config_path.read_text().replace(
            "[status]\nenabled = false",
            f'[status]\nenabled = true\nlisten = "127.0.0.1:{w.port}"')  # type: ignore[attr-defined]
        w.config_path.write_text(text)
        w.open()
    return w


async def run_daemon(daemon: Daemon, scenario: Callable[[], Awaitable[None]],
                     limit: float = 120) -> None:
    """Run the daemon until ``scenario`` returns, then stop it cleanly."""

    async def body() -> None:
        try:
            await scenario()
        finally:
            daemon.stop()

    with anyio.fail_after(limit):
        await daemon.run(extra=lambda tg: tg.start_soon(body))


async def wait_for_port(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        for _ in range(200):
            try:
                await http.get("/healthz")
                return
            except httpx.TransportError:
                await anyio.sleep(0.05)
    raise AssertionError("status server never answered")


async def asgi_post(app: Any, path: str, raw: list[tuple[bytes, bytes]], body: bytes,
                    chunks: int = 1) -> int:
    """POST straight into the ASGI app with raw header bytes, as a server would hand them
    over (an HTTP client library refuses to send most of what a fuzzer makes)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "server": ("127.0.0.1", 9797),
             "client": ("127.0.0.1", 40000), "headers": [(k.lower(), v) for k, v in raw]}
    size = max(1, -(-len(body) // chunks))
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    messages = [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
                for i, part in enumerate(parts)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


# --- 18.1: no header reaches a 500 -------------------------------------------------------------

header_values = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=40).map(lambda t: t.encode("utf-8")),
    st.builds(lambda p, t: p + t.encode("utf-8", "surrogatepass"),
              st.sampled_from([b"v1=", b"v1,", b"v1=0,v1=", b"v1,x v1,"]), st.text(max_size=80)),
    st.integers(min_value=-10**30, max_value=10**30).map(lambda n: str(n).encode()),
    st.integers(min_value=1, max_value=5000).map(lambda n: b"9" * n),
    st.just(str(int(time.time())).encode()),
)
raw_headers = st.lists(
    st.tuples(st.one_of(st.sampled_from(HEADER_NAMES), st.binary(min_size=1, max_size=20)),
              header_values), max_size=8)


def test_verifiers_refuse_any_header_without_raising(tmp_path: Path) -> None:
    """Both verifiers, fed every kind of header value a socket can carry (latin-1 decoded, as
    Starlette hands them over) and plain dicts of any text (surrogates included): a bool, never
    an exception. The non-ASCII signature used to raise TypeError in compare_digest."""
    w = hooked_world(tmp_path)
    verifiers = [w.engine.clients["pd"].verify_webhook,  # type: ignore[attr-defined]
                 w.engine.clients["ii"].verify_webhook]  # type: ignore[attr-defined]

    @settings(max_examples=400, deadline=None)
    @given(raw=raw_headers, body=st.binary(max_size=256),
           texts=st.dictionaries(st.sampled_from([n.decode() for n in HEADER_NAMES]),
                                 st.text(max_size=60), max_size=5))
    def check(raw: list[tuple[bytes, bytes]], body: bytes, texts: dict[str, str]) -> None:
        for verify in verifiers:
            assert verify(Headers(raw=[(k.lower(), v) for k, v in raw]), body) is False
            assert verify(texts, body) is False

    check()
    anyio.run(w.close)


def test_non_ascii_signature_is_a_401_not_a_500(tmp_path: Path) -> None:
    """The reported crash, through the app: a non-ASCII ``webhook-signature`` (and PagerDuty's
    header likewise) with an otherwise plausible delivery."""
    w = hooked_world(tmp_path)
    app = build_app(Daemon(w.config, w.ledger, w.engine))
    body = b'{"event_type": "public_incident.incident_updated_v2"}'

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            stamp = str(int(time.time())).encode()
            ii = [(b"webhook-id", b"msg_1"), (b"webhook-timestamp", stamp),
                  (b"webhook-signature", "v1,ÿé€".encode())]
            pd = [(b"x-pagerduty-signature", "v1=ünïcode".encode())]
            return [(await http.post(f"/webhooks/{a}", content=body, headers=h)).status_code
                    for a, h in (("ii", ii), ("pd", pd))]

    assert anyio.run(go) == [401, 401]
    anyio.run(w.close)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_fuzzed_deliveries_never_reach_a_500(tmp_path: Path) -> None:
    """Random accounts, headers and bodies through the whole app: only the documented answers."""
    w = hooked_world(tmp_path)
    app = build_app(Daemon(w.config, w.ledger, w.engine))

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(account=st.sampled_from(["pd", "ii", "vo", "nobody", "%C3%BF", "a" * 300]),
           raw=raw_headers, body=st.binary(max_size=512))
    def check(account: str, raw: list[tuple[bytes, bytes]], body: bytes) -> None:
        status = anyio.run(asgi_post, app, f"/webhooks/{account}", raw, body)
        assert status in {400, 401, 404, 413}

    check()
    anyio.run(w.close)
