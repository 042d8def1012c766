"""The ledger file as a careless operator (or a failing disk) leaves it: a second daemon on it,
damaged or emptied files, a full disk, another process holding SQLite's write lock.

Each must end in one line (a command) or one structured event (the daemon), never a traceback,
and never with state lost: syncd refuses, reports, waits, and carries on when the cause is gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
from structlog.testing import capture_logs
from world import World, account_table, render

from syncd import simulators
from syncd.daemon import Daemon
from syncd.ledger import Ledger, LedgerBusy, LedgerDamaged, utcnow
from syncd.ledger.lock import lock_path
from syncd.simulators.server import Running, start_in_thread

ROOT = Path(__file__).resolve().parents[2]


def syncd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def one_line(stderr: str) -> str:
    """The command's error: exactly one line (besides config warnings), no traceback."""
    lines = [line for line in stderr.splitlines()
             if line.strip() and not line.startswith("syncd: warning:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# ----------------------------------------------------------------------------- one daemon


def test_exclusive_open_is_refused_while_held_and_free_after(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    first = Ledger.open(url, exclusive=True)
    with pytest.raises(LedgerBusy, match=rf"in use by another syncd \(pid {os.getpid()},"):
        Ledger.open(url, exclusive=True)
    Ledger.open(url).dispose()  # readers never take the lock
    first.dispose()
    assert lock_path(tmp_path / "l.db").read_text() == ""  # no stale pid after release
    Ledger.open(url, exclusive=True).dispose()


@contextmanager
def spike_config(tmp_path: Path, extra: str = "") -> Iterator[tuple[Path, Path, Running]]:
    sim = simulators.load("spike")()
    running = start_in_thread(sim)
    try:
        table = account_table("spike", sim.describe(running.base_url))
        table["poll_interval"] = 0.5
        config = tmp_path / "syncd.toml"
        ledger = tmp_path / "ledger.db"
        config.write_text(render({"sp": table}, [], ledger, extra))
        yield config, ledger, running
    finally:
        running.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_second_syncing_process_is_refused_and_read_only_commands_work(tmp_path: Path) -> None:
    """Two daemons on one ledger both push (issue 20.1): the second `run`, a `once` and a
    repairing `oncall` are refused naming the holder; views keep working beside it; the lock
    dies with its holder, even by SIGKILL."""
    with spike_config(tmp_path) as (config, ledger, running):
        c = str(config)
        daemon = subprocess.Popen([sys.executable, "-m", "syncd", "run", "-c", c], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            lock = lock_path(ledger)
            wait_for(lambda: lock.exists() and lock.read_text().strip() == str(daemon.pid),
                     what="the daemon's lock")
            running.sim.alert(dedup="seen", title="seen", severity="sev1")
            for argv in (["run"], ["once"], ["oncall", "--repair"]):
                proc = syncd(*argv, "-c", c)
                assert proc.returncode == 2, (argv, proc.stderr)
                line = one_line(proc.stderr)
                assert line == (f"syncd: ledger {ledger} is in use by another syncd "
                                f"(pid {daemon.pid}, holding {lock}); stop it first: only one "
                                "process may sync a ledger at a time"), argv
            for argv in (["status"], ["links"], ["audit"], ["oncall"], ["oncall", "--dry-run"],
                         ["check-config"]):
                proc = syncd(*argv, "-c", c, "--json")
                assert proc.returncode == 0, (argv, proc.stderr)
            wait_for(lambda: '"records": 1' in syncd("status", "-c", c, "--json").stdout,
                     what="the daemon to keep polling while refusing the others")
            assert daemon.poll() is None
            daemon.send_signal(signal.SIGKILL)  # the kernel drops the flock with the process
            daemon.wait(timeout=10)
            daemon.stderr.close()  # type: ignore[union-attr]
            proc = syncd("once", "-c", c)
            assert proc.returncode == 0, proc.stderr
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


# ----------------------------------------------------------------------------- damaged files


def _filled(path: Path) -> Path:
    """A real ledger with enough rows to span many pages, checkpointed into the main file."""
    ledger = Ledger.open(f"sqlite:///{path}")
    now = utcnow()
    ledger.call(lambda tx: tx.bulk_records([
        {"account": "sp", "external_id": f"E{i}", "title": "t" * 200, "state": "triggered",
         "keys_json": "{}", "first_seen_at": now, "observed_at": now} for i in range(1500)]))
    ledger.dispose()
    return path


def _sql(statement: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        conn = sqlite3.connect(path)
        conn.execute(statement)
        conn.commit()
        conn.close()
    return damage


def _bytes(edit: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(edit(path.read_bytes()))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty": (_bytes(lambda b: b""), "is empty (0 bytes) and syncd will not initialise an "
              "existing file; restore it from a backup, or delete it to start a new ledger"),
    "garbage": (_bytes(lambda b: bytes((i * 37 + 11) % 256 for i in range(8192))),
                "is not an SQLite database"),
    "header magic": (_bytes(lambda b: b"not sqlite at al" + b[16:]), "is not an SQLite database"),
    "header page size": (_bytes(lambda b: b[:16] + b"\x00\x07" + b[18:]),
                         "is damaged (file is not a database)"),
    "truncated": (_bytes(lambda b: b[: len(b) // 2]), "is damaged (database disk image is "
                  "malformed)"),
    "page overwritten": (_bytes(lambda b: b[:3 * 4096] + b"\xff" * 4096 + b[4 * 4096:]),
                         "is damaged"),
    "dropped table": (_sql("DROP TABLE outbox"), "is damaged: table outbox missing"),
    "dropped column": (_sql("ALTER TABLE record DROP COLUMN url"),
                       "is damaged: column record.url missing"),
    "no schema version row": (_sql("DELETE FROM meta"),
                              "is damaged: it has syncd tables but no schema version row"),
    "not a syncd ledger": (_sql("CREATE TABLE notes (x)"), "is not a syncd ledger"),
}


def _damaged(tmp_path: Path, kind: str) -> tuple[Path, bytes]:
    damage, _ = DAMAGE[kind]
    path = _filled(tmp_path / "ledger.db")
    if kind == "not a syncd ledger":
        path.unlink()
    damage(path)
    for side in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        side.unlink(missing_ok=True)
    return path, path.read_bytes()


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_ledger_is_one_line_and_left_untouched(tmp_path: Path, kind: str) -> None:
    path, before = _damaged(tmp_path, kind)
    with pytest.raises(LedgerDamaged) as err:
        Ledger.open(f"sqlite:///{path}")
    message = str(err.value)
    assert "\n" not in message and DAMAGE[kind][1] in message, message
    assert str(path) in message
    assert path.read_bytes() == before  # syncd never rewrites or re-initialises it


@pytest.mark.slow
def test_damaged_ledger_stops_run_and_status_with_one_line(tmp_path: Path) -> None:
    """Through the commands an operator runs: `syncd run` refuses to start and `syncd status`
    refuses to report, each with one line and exit 2 (one kind per way of detecting it: the
    file check, SQLite's quick_check, the schema check; every kind is covered above)."""
    with spike_config(tmp_path) as (config, ledger, _running):
        for kind in ("empty", "garbage", "truncated", "dropped column", "no schema version row"):
            expected = DAMAGE[kind][1]
            for side in (ledger, Path(f"{ledger}-wal"), Path(f"{ledger}-shm")):
                side.unlink(missing_ok=True)
            path, before = _damaged(tmp_path, kind)
            assert path == ledger
            for command in ("run", "status"):
                proc = syncd(command, "-c", str(config))
                assert proc.returncode == 2, (kind, command, proc.stderr)
                assert expected in one_line(proc.stderr), (kind, command)
            assert path.read_bytes() == before, kind


# ----------------------------------------------------------------------------- write failures

HOLD_WRITE_LOCK = (
    "import sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "conn.execute('BEGIN IMMEDIATE')\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def hold_write_lock(ledger: Path) -> Callable[[], None]:
    """Another process takes SQLite's write lock on ``ledger``; returns how to release it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(ledger)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"

    def release() -> None:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    return release


@contextmanager
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 16 MB tmpfs when this test runs as root and may mount one, else None."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield None
        return
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        yield None
        return
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fill the filesystem to the last block; returns the file to delete to give space back."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1 << 9):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return filler


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the ledger beside the daemon (WAL readers need no lock, and no disk space)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def _ledger_outage(tmp: Path, fault: str, way: str) -> None:
    """A running daemon meets a ledger it cannot write; once the cause is gone it carries on
    where it stopped, and everything that happened at the vendors meanwhile gets through."""
    w = World(tmp, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}], poll_interval=0.3)
    port = free_port()
    text = w.config_path.read_text().replace(
        "[status]\nenabled = false", f'[status]\nenabled = true\nlisten = "127.0.0.1:{port}"')
    w.config_path.write_text(text.replace("[ledger]\n", "[ledger]\nbusy_timeout = 0.3\n", 1))
    await w.restart()
    ledger = tmp / "ledger.db"
    w.alert("before")
    daemon = Daemon(w.config, w.ledger, w.engine)
    reason = "locked" if fault == "locked" else "disk full"
    seen: dict[str, object] = {}

    async def readyz(http: httpx.AsyncClient, ready: bool) -> dict[str, object]:
        last: object = None
        with anyio.move_on_after(60):
            while True:
                r = await http.get("/readyz")
                last = r.json()
                if (r.status_code == 200) == ready and (
                        ready or f"ledger not writable: {reason}" in r.json()["problems"]):
                    return dict(r.json())
                await anyio.sleep(0.1)
        raise AssertionError(f"/readyz never became {'ready' if ready else reason}: {last}")

    async def scenario(_tg: object) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            with anyio.fail_after(30):
                while True:
                    try:
                        await http.get("/healthz")
                        break
                    except httpx.ConnectError:
                        await anyio.sleep(0.05)
            await readyz(http, True)
            stop: Callable[[], None]
            if fault == "locked":
                stop = hold_write_lock(ledger)
            elif way == "tmpfs":
                filler = fill(tmp)
                stop = filler.unlink
            else:
                w.ledger.cap_growth(w.ledger.page_count())

                def stop() -> None:
                    w.ledger.cap_growth(None)
            try:
                w.act("sp", "before", "acknowledge")
                for i in range(40):  # rows that need new pages, not only rewritten ones
                    w.alert(f"during-{i}", title=f"during-{i} " + "x" * 1000)
                seen["down"] = await readyz(http, False)
                cursors = rows(ledger, "SELECT account, cursor, last_success_at FROM poll_cursor")
                await anyio.sleep(1.5)
                assert rows(ledger, "SELECT account, cursor, last_success_at FROM poll_cursor"
                            ) == cursors  # not advanced: the failed pages are read again later
                assert rows(ledger, "SELECT count(*) FROM record WHERE title LIKE 'during-%'"
                            ) == [(0,)]
                assert w.incident("vo", "before")["state"] == "triggered"
                seen["metrics_down"] = (await http.get("/metrics")).text
            finally:
                stop()
            await readyz(http, True)
            with anyio.fail_after(60):
                while True:
                    during = rows(ledger, "SELECT count(*) FROM record WHERE title LIKE 'during-%'")
                    if during == [(80,)] and w.incident("vo", "before")["state"] == "acknowledged":
                        break
                    await anyio.sleep(0.1)
            seen["metrics_up"] = (await http.get("/metrics")).text
        daemon.stop()

    def extra(tg: anyio.abc.TaskGroup) -> None:
        tg.start_soon(scenario, tg)

    try:
        with capture_logs() as logs, anyio.fail_after(180):
            await daemon.run(extra=extra)
    finally:
        await w.close()
    failed = [e for e in logs if e["event"] == "ledger.write_failed"]
    assert [e["reason"] for e in failed] == [reason], failed
    assert [e["reason"] for e in logs if e["event"] == "ledger.recovered"] == [reason]
    assert not [e for e in logs if e["event"] == "job.failed"]
    assert "syncd_ledger_writable 0.0" in str(seen["metrics_down"])
    assert f'syncd_ledger_write_failures_total{{reason="{reason}"}}' in str(seen["metrics_down"])
    assert "syncd_ledger_writable 1.0" in str(seen["metrics_up"])
    for incident in w.sims["vo"].canonical_incidents() + w.sims["sp"].canonical_incidents():
        assert len(w.incidents("vo", incident["dedup"])) == 1  # nothing created twice


@pytest.mark.slow
async def test_sqlite_write_lock_held_elsewhere_is_a_state_not_a_traceback(
        tmp_path: Path) -> None:
    """Another process holds SQLite's write lock past the busy timeout (issue 18.4)."""
    await _ledger_outage(tmp_path, "locked", "process")


@pytest.mark.slow
async def test_full_disk_is_a_state_not_a_traceback(tmp_path: Path) -> None:
    """The ledger's filesystem fills up (issue 18.4): a real 16 MB tmpfs filled to the last
    block when root may mount one, else the ledger's seam (SQLite's max_page_count, which
    raises the same "database or disk is full"). The test's output names the way that ran."""
    with small_disk(tmp_path) as disk:
        way = "seam" if disk is None else "tmpfs"
        print(f"full disk by {way}")
        await _ledger_outage(disk or tmp_path / "disk", "disk full", way)


async def test_full_disk_by_seam_is_a_state_not_a_traceback(tmp_path: Path) -> None:
    """The same through the seam wherever the tests run, root or not."""
    await _ledger_outage(tmp_path, "disk full", "seam")


@pytest.mark.slow
def test_commands_meet_a_locked_ledger_with_one_line(tmp_path: Path) -> None:
    """`once` and the views, while another process holds SQLite's write lock past the busy
    timeout: one line naming the ledger, and the next run after the lock is gone works."""
    with spike_config(tmp_path) as (config, ledger, running):
        config.write_text(config.read_text().replace("[ledger]\n",
                                                     "[ledger]\nbusy_timeout = 0.2\n", 1))
        running.sim.alert(dedup="a", title="a", severity="sev1")
        assert syncd("once", "-c", str(config)).returncode == 0  # creates the ledger
        release = hold_write_lock(ledger)
        try:
            for argv in (["once"], ["status"], ["links"]):
                proc = syncd(*argv, "-c", str(config))
                assert proc.returncode == 2, (argv, proc.stderr)
                assert one_line(proc.stderr) == (
                    f"syncd: cannot open ledger sqlite:///{ledger}: database is locked"), argv
        finally:
            release()
        proc = syncd("once", "-c", str(config))
        assert proc.returncode == 0, proc.stderr
