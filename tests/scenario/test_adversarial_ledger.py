"""The ledger file as a careless operator (or a failing disk) leaves it: a second daemon on it,
damaged or emptied files, a full disk, another process holding SQLite's write lock.

Each must end in one line (a command) or one structured event (the daemon), never a traceback,
and never with state lost: syncd refuses, reports, waits, and carries on when the cause is gone.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from world import account_table, render

from syncd import simulators
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
