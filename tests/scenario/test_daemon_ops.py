"""The daemon as an operator meets it: status server, readiness, SIGTERM, bad config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import anyio
import httpx
import pytest
from world import World, account_table, render, stop_mid_request, threaded_sims

from syncd import simulators
from syncd.daemon import STOP_GRACE, Daemon
from syncd.ledger import Ledger
from syncd.ratelimit import ACCOUNT, Budget, Limit
from syncd.simulators.server import start_in_thread


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_status_server_metrics_and_readiness(tmp_path: Path) -> None:
    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}], poll_interval=0.3)
    port = free_port()
    text = w.config_path.read_text().replace(
        "[status]\nenabled = false", f'[status]\nenabled = true\nlisten = "127.0.0.1:{port}"')
    w.config_path.write_text(text)
    await w.restart()
    w.alert("metrics-1")
    w.sims["sp"].faults.outage_until = w.sims["sp"].clock.monotonic() + 3600  # sp is down
    daemon = Daemon(w.config, w.ledger, w.engine)
    seen: dict[str, object] = {}

    async def probe(tg: object) -> None:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            for _ in range(100):
                try:
                    r = await http.get("/healthz")
                    break
                except httpx.ConnectError:
                    await anyio.sleep(0.05)
            seen["healthz"] = r.status_code
            await anyio.sleep(1.0)
            r = await http.get("/readyz")
            seen["readyz_down"] = (r.status_code, r.json())
            w.sims["sp"].faults.outage_until = 0  # sp comes back
            for _ in range(100):
                r = await http.get("/readyz")
                if r.status_code == 200:
                    break
                await anyio.sleep(0.1)
            seen["readyz_up"] = r.status_code
            seen["metrics"] = (await http.get("/metrics")).text
            seen["status"] = (await http.get("/status")).json()
        daemon.stop()

    def extra(tg: object) -> None:
        tg.start_soon(probe, tg)  # type: ignore[attr-defined]

    with anyio.fail_after(60):
        await daemon.run(extra=extra)
    assert seen["healthz"] == 200
    code, body = seen["readyz_down"]  # type: ignore[misc]
    assert code == 503 and any("sp:" in p for p in body["problems"])
    assert seen["readyz_up"] == 200
    metrics = str(seen["metrics"])
    assert 'syncd_vendor_requests_total{account="vo",endpoint="GET /api-public/v1/incidents"' \
        in metrics
    assert "syncd_polls_total" in metrics and "syncd_outbox_depth" in metrics
    status = seen["status"]
    assert {a["name"] for a in status["accounts"]} == {"vo", "sp"}  # type: ignore[index]
    text = str(status)
    for account in w.config.accounts.values():
        for value in account.model_dump().values():
            if hasattr(value, "get_secret_value"):
                assert value.get_secret_value() not in text + metrics


def test_run_refuses_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[ledger]\npath = "x.db"\nbogus = 1\n')
    proc = subprocess.run([sys.executable, "-m", "syncd", "run", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"syncd: {path}:3: ledger.(a key on this line): unknown "
                                   "key (not named, as it may be a pasted secret)")


def test_run_says_an_ignored_log_format_once(tmp_path: Path) -> None:
    """``syncd run`` set logging up twice (reading the config, then for the daemon), and a
    SYNCD_LOG_FORMAT that is no format was warned about twice."""
    sim = simulators.load("spike")()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "syncd.toml"
        config.write_text(render({"sp": account_table("spike", sim.describe(
            "http://127.0.0.1:9"))}, [], tmp_path / "ledger.db").replace(
            "[status]\nenabled = false",
            f'[status]\nenabled = true\nlisten = "127.0.0.1:{port}"'))
        proc = subprocess.run([sys.executable, "-m", "syncd", "run", "-c", str(config)],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "SYNCD_LOG_FORMAT": "jsno"})
    assert proc.returncode == 2, proc.stderr  # the status port is taken: stops right there
    assert (proc.stdout + proc.stderr).count("logging.format_ignored") == 1, proc.stdout


def linked_in(ledger: Path, account: str) -> int:
    """How many links have a member in ``account``, read beside the running daemon (a reader
    takes no lock). Asked every 0.3 s while the daemon links a burst: a `syncd links` process
    each time cost a Python start-up that the daemon under test had to share the CPU with."""
    reader = Ledger.open(f"sqlite:///{ledger}")
    try:
        return reader.call(lambda tx: sum(
            1 for link in tx.links(limit=1000)
            if any(record.account == account for _member, record in tx.members(link.id))))
    finally:
        reader.dispose()


@pytest.mark.slow
def test_sigterm_during_a_push_burst_exits_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    vendors = {"vo": "victorops", "sp": "spike"}
    # Slow vendors (50 ms a call) keep pushes in flight when SIGTERM lands.
    running, tables = threaded_sims(vendors, poll_interval=0.3, latency=0.05)
    config = tmp_path / "syncd.toml"
    config.write_text(render(tables, [{"name": "g", "accounts": list(vendors)}],
                             tmp_path / "ledger.db"))
    log = tmp_path / "daemon.log"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "syncd", "run", "-c", str(config)],
                                stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                env={**os.environ, "SYNCD_LOG_FORMAT": "json"})

    try:
        keys = [f"burst-{i}" for i in range(150)]
        for key in keys:
            for r in running.values():
                r.sim.alert(dedup=key, title=key, severity="sev1")
        proc = start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until everything is linked
            if ('"daemon.started"' in log.read_text()  # its ledger exists, schema and all
                    and linked_in(tmp_path / "ledger.db", "sp") >= 150):
                break
            time.sleep(0.3)
        sp = running["sp"].sim
        for inc in sp.canonical_incidents():
            sp.act(inc["id"], "acknowledge")
        time.sleep(1.0)  # the poll sees 150 acks; pushes to vo are under way
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        assert '"daemon.stopped"' in log.read_text()
        proc = start()
        deadline = time.monotonic() + 60
        vo = running["vo"].sim
        while time.monotonic() < deadline:
            # Until the restarted daemon has started, a SIGTERM could land while the
            # interpreter is still importing, before any Python handler can exist.
            started_twice = log.read_text().count('"daemon.started"') >= 2
            if started_twice and all(i["state"] == "acknowledged"
                                     for i in vo.canonical_incidents()):
                break
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        states = [i["state"] for i in vo.canonical_incidents()]
        assert len(states) == 150 and set(states) == {"acknowledged"}
    finally:
        for r in running.values():
            r.stop()


async def test_a_stop_while_a_push_waits_on_its_budget_abandons_it_and_exits_cleanly(
        tmp_path: Path) -> None:
    """A job still waiting for its vendor budget when the stop's grace runs out (a minute's
    calls spent, the window not yet passed) is abandoned and the daemon stops normally. The job
    swallows its cancellation at shutdown, and the drain (a cancel scope around asyncio.gather)
    let gather's CancelledError out: exit 1 with a traceback, what the SIGTERM push-burst test
    met when the budget paced the pushes. The job counts as pushing (as a dispatch does), so
    the stop waits out its grace for it rather than cancelling it at once."""
    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}])
    daemon = Daemon(w.config, w.ledger, w.engine)
    daemon.stop_grace = 0.2
    budget = Budget({ACCOUNT: Limit(1, 3600.0)})
    waiting = anyio.Event()

    async def push_past_the_budget() -> None:
        with daemon._job_pushing():
            await budget.acquire(write=True)
            waiting.set()
            await budget.acquire(write=True)  # the next token comes in an hour

    pushing_at_stop: list[bool] = []

    async def stop_once_waiting() -> None:
        await waiting.wait()
        await anyio.sleep(0.05)
        pushing_at_stop.append(jobs[0] in daemon._pushing)
        daemon.stop()

    jobs: list[asyncio.Task[None]] = []

    def start(tg: anyio.abc.TaskGroup) -> None:
        # Started as the scheduler starts a job: a task of its own, not of the daemon's group.
        jobs.append(asyncio.get_running_loop().create_task(
            daemon._guard("dispatch:vo", push_past_the_budget)()))
        tg.start_soon(stop_once_waiting)

    try:
        with anyio.fail_after(5):
            await daemon.run(extra=start)
        assert pushing_at_stop == [True]  # given the grace, not cancelled at once
        assert jobs[0].done() and not jobs[0].cancelled()  # abandoned: it returned
    finally:
        await w.close()


async def test_sd_notify_ready_status_watchdog_stopping(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd (Type=notify) the daemon says READY=1, keeps STATUS= current, pings the
    watchdog at half its interval and says STOPPING=1 on the way out."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}], poll_interval=0.3)
    daemon = Daemon(w.config, w.ledger, w.engine)

    async def stop_later(tg: object) -> None:
        await anyio.sleep(1.5)
        daemon.stop()

    with anyio.fail_after(30):
        await daemon.run(extra=lambda tg: tg.start_soon(stop_later, tg))
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            break
    sock.close()
    assert "READY=1" in messages
    assert any(m.startswith("STATUS=2 accounts") for m in messages)
    assert messages.count("WATCHDOG=1") >= 3
    assert "STOPPING=1" in messages


async def test_stop_lets_a_push_in_flight_finish(tmp_path: Path) -> None:
    """SIGTERM (``stop``) stops polling but gives a push already on the wire up to
    ``STOP_GRACE`` to land and be confirmed (README, "Running as a service"): the scheduler's
    own shutdown cancels every running job at once, which cut the push off mid-request and
    left it pending, to be sent a second time at the next start."""
    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}], poll_interval=0.3)
    w.alert("drain-1")
    await w.settle()
    vo = w.sims["vo"]
    ack = "/api-public/v1/incidents/ack"
    vo.faults.latency, vo.faults.routes = 1.0, [ack]  # the push to vo takes a second
    w.act("sp", "drain-1", "acknowledge")
    daemon = Daemon(w.config, w.ledger, w.engine)

    try:
        with anyio.fail_after(30):
            await daemon.run(extra=stop_mid_request(daemon, vo, ack))
        assert w.incident("vo", "drain-1")["state"] == "acknowledged"
        w.open()  # what the next start finds
        assert w.ledger.call(lambda tx: tx.outbox_depth()).get("pending", 0) == 0
    finally:
        await w.close()


async def test_the_lease_is_renewed_while_the_drain_waits(tmp_path: Path, pg_url: str) -> None:
    """The lease's renewals were cancelled with the other tasks before the drain, so a push
    still landing could outlive the lease (its recording then refused, the push sent again
    by the next leader). They go on until the drain is over, just before the lease is
    released: a push on the wire longer than a renewal period sees one more renewal."""
    from syncd.ledger.lease import LEADER, Lease, LeaseRow

    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}], poll_interval=0.3,
              ledger_config={"url": pg_url, "lease_ttl": 6})
    w.alert("lease-1")
    await w.settle()
    vo = w.sims["vo"]
    ack = "/api-public/v1/incidents/ack"
    lease = Lease(6.0)
    vo.faults.latency, vo.faults.routes = lease.renew_every * 1.5, [ack]
    w.act("sp", "lease-1", "acknowledge")
    daemon = Daemon(w.config, w.ledger, w.engine, lease)
    stopped: list[datetime] = []

    def renewed() -> datetime:
        return w.ledger.call(lambda tx: tx.session.get(LeaseRow, LEADER).renewed_at)

    try:
        with anyio.fail_after(30):
            await daemon.run(extra=stop_mid_request(
                daemon, vo, ack, before_stop=lambda: stopped.append(renewed())))
        assert w.incident("vo", "lease-1")["state"] == "acknowledged"
        w.open()
        assert renewed() > stopped[0]
    finally:
        await w.close()


async def test_a_failure_in_the_lease_task_still_stops_cleanly(tmp_path: Path,
                                                                pg_url: str) -> None:
    """The shutdown runs in the task group that also holds the lease's renewals: an exception
    escaping them (here the role-change callback failing, which the lease's tick calls outside
    its error handling) cancelled the group, and the shutdown ran cancelled: no drain, the
    lease not released, the ledger not closed, no ``daemon.stopped``. It is shielded: the
    failure still ends syncd (with the error), after a whole shutdown."""
    from structlog.testing import capture_logs

    from syncd.ledger.lease import Lease

    w = World(tmp_path, {"sp": "spike"}, [], poll_interval=0.3,
              ledger_config={"url": pg_url, "lease_ttl": 6})
    await w.restart()
    daemon = Daemon(w.config, w.ledger, w.engine, Lease(6.0))
    assert daemon.leadership is not None

    def role_changed(leading: bool) -> None:
        raise RuntimeError("the role callback failed")

    daemon.leadership.on_change = role_changed  # a bug there, as the lease's tick meets it
    try:
        with anyio.fail_after(30), capture_logs() as logs, \
                pytest.raises(BaseExceptionGroup) as failed:
            await daemon.run()
        assert failed.group_contains(RuntimeError, match="role callback failed")
        assert "daemon.stopped" in [e["event"] for e in logs]
        w.open()
        assert [a.outcome for a in w.ledger.call(
            lambda tx: tx.audit_entries(kind="lease"))][:1] == ["released"]
    finally:
        await w.close()


async def test_sighup_stops_cleanly_with_a_status_systemd_restarts(tmp_path: Path) -> None:
    """SIGHUP (an operator's "reload", or a closed terminal) killed the daemon outright: no
    drain, and systemd counts death by SIGHUP as clean, so Restart=on-failure left syncd down
    for good. It is the clean stop of SIGTERM, with exit status 129 (128 + SIGHUP), a failure
    to systemd, which starts it again with the config re-read."""
    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}], poll_interval=0.3)
    daemon = Daemon(w.config, w.ledger, w.engine)
    safety = signal.signal(signal.SIGHUP, lambda *_: None)  # never the test run's own death

    async def hang_up(tg: object) -> None:
        for _ in range(500):  # until the daemon's handler replaced the safety net
            if signal.getsignal(signal.SIGHUP) is not safety_net:
                break
            await anyio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGHUP)

    safety_net = signal.getsignal(signal.SIGHUP)
    try:
        with anyio.fail_after(10):
            await daemon.run(extra=lambda tg: tg.start_soon(hang_up, tg))
    finally:
        signal.signal(signal.SIGHUP, safety)
    assert daemon.exit_code == 129


async def test_the_status_server_leaves_stop_signals_to_syncd(tmp_path: Path) -> None:
    """uvicorn's ``Server.serve`` installs its own SIGINT/SIGTERM handlers (``capture_signals``;
    uvicorn >= 0.29 ignores ``install_signal_handlers``): started with SIGINT ignored, one
    SIGINT silently stopped the status server while syncd ran on. Signals are syncd's alone:
    an ignored SIGINT changes nothing, and SIGTERM is syncd's one clean stop (uvicorn passed
    the SIGTERM it had caught on again, a second stop signal that cut the drain short)."""
    from structlog.testing import capture_logs

    w = World(tmp_path, {"sp": "spike"}, [], poll_interval=0.3)
    port = free_port()
    w.config_path.write_text(w.config_path.read_text().replace(
        "[status]\nenabled = false", f'[status]\nenabled = true\nlisten = "127.0.0.1:{port}"'))
    await w.restart()
    daemon = Daemon(w.config, w.ledger, w.engine)
    seen: list[int] = []

    async def signal_it() -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(200):
                try:
                    seen.append((await http.get("/healthz")).status_code)
                    break
                except httpx.ConnectError:
                    await anyio.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)
            await anyio.sleep(0.3)  # uvicorn looks at its exit flag every 0.1 s
            try:
                seen.append((await http.get("/healthz")).status_code)
            except httpx.ConnectError:
                seen.append(0)  # the status server is gone
        os.kill(os.getpid(), signal.SIGTERM)

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: None)  # never the test run's own death
    try:
        with anyio.fail_after(30), capture_logs() as logs:
            await daemon.run(extra=lambda tg: tg.start_soon(signal_it))
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        await w.close()
    assert seen == [200, 200]
    events = [e["event"] for e in logs]
    assert "daemon.stopped" in events and "daemon.stopping_now" not in events, events
    assert daemon.exit_code == 0


def wait_for(predicate: Callable[[], bool], what: str, proc: subprocess.Popen[bytes],
             log: Path, timeout: float = 60) -> None:
    """Until ``predicate``, while the daemon ``proc`` (logging to ``log``) runs."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None and time.monotonic() < deadline, \
            f"no {what}: {log.read_text()[-3000:]}"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_second_sighup_mid_drain_ends_it_with_status_129(tmp_path: Path) -> None:
    """A second SIGHUP (or any stop signal) while a push drains found the signal's default
    action back in place: death by SIGHUP, which systemd takes for a clean stop and does not
    restart. Stop signals are handled until the end: a second one cuts the drain short, and
    a SIGHUP among them still makes the exit status 129."""
    running, tables = threaded_sims({"vo": "victorops", "sp": "spike"}, poll_interval=0.3)
    config = tmp_path / "syncd.toml"
    config.write_text(render(tables, [{"name": "g", "accounts": ["vo", "sp"]}],
                             tmp_path / "ledger.db"))
    log = tmp_path / "daemon.log"
    vo, sp = running["vo"].sim, running["sp"].sim
    ack = "/api-public/v1/incidents/ack"
    try:
        for r in running.values():
            r.sim.alert(dedup="hup-1", title="hup-1", severity="sev1")
        proc = subprocess.Popen([sys.executable, "-m", "syncd", "run", "-c", str(config)],
                                stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                env={**os.environ, "SYNCD_LOG_FORMAT": "json"})
        try:
            wait_for(lambda: '"daemon.started"' in log.read_text()
                     and linked_in(tmp_path / "ledger.db", "sp") == 1, "link", proc, log)
            vo.faults.latency, vo.faults.routes = 60.0, [ack]  # the push to vo hangs
            sp.act(sp.canonical_incidents()[0]["id"], "acknowledge")
            wait_for(lambda: vo.inflight_by_route[ack] > 0, "push on the wire", proc, log)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: '"daemon.draining"' in log.read_text(), "drain", proc, log)
            proc.send_signal(signal.SIGHUP)
            assert proc.wait(timeout=30) == 129, log.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
        at = logged_at(log)
        # Cut short: stopped at once, not when the grace (counted from the first HUP) ran out.
        assert at["daemon.stopped"] - at["daemon.stopping_now"] < STOP_GRACE / 2, at
    finally:
        for r in running.values():
            r.stop()


def logged_at(log: Path) -> dict[str, float]:
    """When each event of a JSON log was last logged (Unix seconds)."""
    at: dict[str, float] = {}
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):  # not a JSON event
            entry = json.loads(line)
            at[entry["event"]] = datetime.fromisoformat(entry["timestamp"]).timestamp()
    return at


@pytest.mark.slow
def test_started_under_nohup_a_sighup_is_still_ignored(tmp_path: Path) -> None:
    """``nohup syncd run &`` starts syncd with SIGHUP ignored, so that it outlives the
    terminal; the daemon's handler replaced that, and syncd stopped at logout. An inherited
    SIG_IGN is left alone (as Python does for SIGINT); SIGTERM still stops it, with 0."""
    running, tables = threaded_sims({"sp": "spike"}, poll_interval=0.3)
    config = tmp_path / "syncd.toml"
    config.write_text(render(tables, [], tmp_path / "ledger.db"))
    log = tmp_path / "daemon.log"
    try:
        proc = subprocess.Popen(["nohup", sys.executable, "-m", "syncd", "run", "-c", str(config)],
                                stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                env={**os.environ, "SYNCD_LOG_FORMAT": "json"})
        try:
            wait_for(lambda: '"daemon.started"' in log.read_text(), "start", proc, log)
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.0)  # a handled SIGHUP stops an idle daemon within milliseconds
            assert proc.poll() is None and '"daemon.stopping"' not in log.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        for r in running.values():
            r.stop()


async def test_readyz_says_how_long_ago_in_whole(tmp_path: Path) -> None:
    """A poll last successful a day and 5 s ago (a vendor down over a weekend) was "last
    successful poll 5s ago" in /readyz: the seconds part of the age, not the age."""
    from datetime import timedelta

    from syncd.http.status import build_app
    from syncd.ledger import utcnow

    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}])
    try:
        daemon = Daemon(w.config, w.ledger, w.engine)
        for name in ("vo", "sp"):
            daemon.health.last_poll[name] = utcnow() - timedelta(days=1, seconds=5)
        transport = httpx.ASGITransport(app=build_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            r = await http.get("/readyz")
        assert r.status_code == 503
        ages = [int(p.rsplit(" ", 2)[-2].rstrip("s")) for p in r.json()["problems"]]
        assert len(ages) == 2 and all(86405 <= age < 86500 for age in ages), r.json()
    finally:
        await w.close()


async def test_rejected_credentials_back_off_and_show_in_health(tmp_path: Path) -> None:
    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}],
              account_extra={"sp": {"api_key": "not-the-key"}})
    try:
        daemon = Daemon(w.config, w.ledger, w.engine)
        await daemon._poll("sp")
        calls = w.sims["sp"].call_count()
        assert calls >= 1 and w.sims["sp"].call_count(status=401) == calls
        assert daemon.health.auth_failed["sp"] is True
        await daemon._poll("sp")
        assert w.sims["sp"].call_count() == calls, "a rejected key must not be retried at once"
        await daemon._poll("vo")
        assert daemon.health.auth_failed["vo"] is False
        cursor = w.ledger.call(lambda tx: tx.cursor("sp"))
        assert "AuthError" in (cursor.last_error or "") and "not-the-key" not in cursor.last_error
    finally:
        await w.close()


@pytest.mark.slow
def test_sigterm_while_starting_still_exits_cleanly(tmp_path: Path) -> None:
    """systemd may stop the unit while it is still starting: the stop must be clean (exit 0),
    not death by the default SIGTERM handler."""
    sim = simulators.load("spike")()
    running = start_in_thread(sim)
    try:
        table = account_table("spike", sim.describe(running.base_url))
        config = tmp_path / "syncd.toml"
        ledger = tmp_path / "ledger.db"
        config.write_text(render({"sp": table}, [], ledger))
        proc = subprocess.Popen([sys.executable, "-m", "syncd", "run", "-c", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not ledger.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)  # the ledger is being opened: mid start-up
        assert proc.wait(timeout=20) == 0
    finally:
        running.stop()


@pytest.mark.parametrize("renewing", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["releasing", "renewing"])
async def test_a_stop_does_not_wait_for_a_lease_row_held_elsewhere(tmp_path: Path, pg_url: str,
                                                             renewing: bool) -> None:
    """The release at a stop took the lease row FOR UPDATE with no lock wait limit, on a
    thread that could not be cancelled: a transaction holding the row FOR SHARE (any long
    leader transaction) held the stop as long, past systemd's SIGKILL. Now the release is
    abandoned (logged; the TTL ends the term) and the stop returns while the row is held.
    ``renewing``: the stop comes while a renewal waits on the row (its lock wait is ttl/3, 10 s
    at a 30 s lease): the renewal is abandoned too, not waited for (review of resign)."""
    import threading

    from structlog.testing import capture_logs

    from syncd.ledger.lease import Lease, db_now

    ttl = 30.0 if renewing else 6.0
    w = World(tmp_path, {"sp": "spike"}, [], poll_interval=0.3,
              ledger_config={"url": pg_url, "lease_ttl": ttl})
    await w.restart()
    lease = Lease(ttl)
    daemon = Daemon(w.config, w.ledger, w.engine, lease)
    other = Ledger.open(pg_url)
    other.fence = lease.fence  # takes the row FOR SHARE, as the leader's transactions do
    holding, done, gave_up = threading.Event(), threading.Event(), threading.Event()

    def hold(tx) -> None:  # type: ignore[no-untyped-def]
        holding.set()
        deadline[0] = time.monotonic() + 12
        while not done.wait(0.2):  # a statement now and then: not idle in transaction
            db_now(tx)
            if time.monotonic() > deadline[0]:
                gave_up.set()
                return

    holder = threading.Thread(target=other.call, args=(hold,))
    deadline = [0.0]
    renewal = threading.Event()
    attempt = lease.attempt

    def renew(tx):  # type: ignore[no-untyped-def]
        renewal.set()
        return attempt(tx)

    lease.attempt = renew  # type: ignore[method-assign]

    async def stop_while_held() -> None:
        for _ in range(400):  # the role has no event to wait on: look every 50 ms
            if daemon.leadership is not None and daemon.leadership.leading:
                break
            await anyio.sleep(0.05)
        holder.start()
        await anyio.to_thread.run_sync(holding.wait)
        if renewing:
            renewal.clear()
            await anyio.to_thread.run_sync(renewal.wait)  # the next renewal waits on the row
            deadline[0] = time.monotonic() + 8  # less than its 10 s lock wait
            await anyio.sleep(0.3)
        daemon.stop()

    try:
        with capture_logs() as logs:
            await daemon.run(extra=lambda tg: tg.start_soon(stop_while_held))
        assert not gave_up.is_set() and holder.is_alive()  # stopped while the row was held
        assert "lease.release_abandoned" in [e["event"] for e in logs]
        done.set()
        await anyio.to_thread.run_sync(holder.join)
        w.open()
        if renewing:
            # The abandoned renewal got the row once the holder let go: it ended the term
            # instead of renewing a process that had left (a standby waited out the TTL).
            for _ in range(100):
                if "released" in [a.outcome for a in w.ledger.call(
                        lambda tx: tx.audit_entries(kind="lease"))]:
                    break
                await anyio.sleep(0.05)
            term = await w.ledger.run_lease(lease.attempt)  # a look: nobody's now
            assert term.holder == "" or term.expired, term
        else:
            assert "released" not in [a.outcome for a in w.ledger.call(
                lambda tx: tx.audit_entries(kind="lease"))]
    finally:
        done.set()
        if holder.is_alive():
            holder.join()
        other.dispose()
        await w.close()
