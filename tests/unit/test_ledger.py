"""The ledger file: creation, migrations from older schemas, refusal of newer ones, bad paths."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlmodel import SQLModel

from syncd.ledger import Ledger, LedgerError, migrations, pages, utcnow
from syncd.ledger.migrations import MIGRATIONS, SCHEMA_VERSION, statements
from syncd.ledger.prepared import InSelect
from syncd.ledger.store import SQLITE_CACHE_KIB
from syncd.model import marker_for, origin_tag, tag_of


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def at_version(conn: sqlite3.Connection, version: int) -> None:
    """Make an empty database what release ``version`` of the schema wrote."""
    for script in MIGRATIONS[:version]:
        for stmt in statements(script):
            conn.execute(stmt)
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))


def test_new_ledger_is_wal_and_current(tmp_path: Path) -> None:
    ledger = Ledger.open(url(tmp_path / "l.db"))
    assert ledger.schema_version() == SCHEMA_VERSION
    with sqlite3.connect(tmp_path / "l.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ledger_connections_use_the_small_page_cache(tmp_path: Path) -> None:
    """Every pooled connection, not only the first: the daemon holds two."""
    ledger = Ledger.open(url(tmp_path / "l.db"))
    try:
        one, two = ledger.engine.raw_connection(), ledger.engine.raw_connection()
        try:
            for conn in (one, two):
                assert conn.execute("PRAGMA cache_size").fetchone()[0] == -SQLITE_CACHE_KIB
        finally:
            one.close()
            two.close()
    finally:
        ledger.dispose()


def test_tables_match_migrated_schema(tmp_path: Path) -> None:
    """The SQLModel classes the queries use must describe exactly what the scripts create."""
    ledger = Ledger.open(url(tmp_path / "l.db"))
    inspector = inspect(ledger.engine)
    for table in SQLModel.metadata.sorted_tables:
        db_cols = {c["name"] for c in inspector.get_columns(table.name)}
        assert db_cols == {c.name for c in table.columns}, table.name


def test_ledger_from_older_release_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # what release 1 of the schema wrote
        for stmt in statements(MIGRATIONS[0]):
            conn.execute(stmt)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute(
            "INSERT INTO record (account, external_id, state, first_seen_at, observed_at) "
            "VALUES ('pd', 'P1', 'triggered', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
    ledger = Ledger.open(url(path))
    assert ledger.schema_version() == SCHEMA_VERSION
    rec = ledger.call(lambda tx: tx.record("pd", "P1"))
    assert rec is not None and rec.state == "triggered"
    n = ledger.call(lambda tx: tx.record_oncall("pd", [], utcnow()))
    assert n == 0


def test_outbox_rows_survive_the_migration_that_frees_link_id(tmp_path: Path) -> None:
    """Release 2's outbox required a link; overrides (schema 3) owe none. Pending rows of an
    old ledger come through the table rebuild intact and still go out."""
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as conn:
        at_version(conn, 2)
        conn.execute("INSERT INTO link (id, group_name, origin, created_at) "
                     "VALUES (1, 'g', 'correlate', '2026-01-01 00:00:00')")
        conn.execute("INSERT INTO record (id, account, external_id, state, first_seen_at, "
                     "observed_at) VALUES (5, 'vo', '7', 'triggered', '2026-01-01 00:00:00', "
                     "'2026-01-01 00:00:00')")
        conn.execute(
            "INSERT INTO outbox (group_name, link_id, record_id, account, action, "
            "idempotency_key, status, attempts, next_attempt_at, caused_at, created_at, "
            "updated_at) VALUES ('g', 1, 5, 'vo', 'acknowledge', 'k1', 'pending', 2, "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00', '2026-01-01 00:00:00', "
            "'2026-01-01 00:00:00')")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO outbox (group_name, account, action, idempotency_key, "
                         "next_attempt_at, caused_at, created_at, updated_at) VALUES "
                         "('m', 'vo', 'override', 'k2', 0, 0, 0, 0)")
    ledger = Ledger.open(url(path))
    assert ledger.schema_version() == SCHEMA_VERSION
    due = ledger.call(lambda tx: [(r.link_id, r.record_id, r.action, r.attempts, r.result)
                                  for r in tx.due("vo", utcnow())])
    assert due == [(1, 5, "acknowledge", 2, None)]
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO outbox (group_name, account, action, idempotency_key, "
                     "next_attempt_at, caused_at, created_at, updated_at) VALUES "
                     "('m', 'vo', 'override', 'k2', 0, 0, 0, 0)")
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(outbox)")}
    assert {"ix_outbox_due", "ix_outbox_record", "ix_outbox_action"} <= indexes


MARKED = (("b", "1", marker_for("mig-2", 12, "a", "S1")), ("b", "2", "syncd-mig-12"),
          ("b", "3", None), ("b", "4", "syncd-g-3-o1234567"),
          ("b", "5", f"syncd-g-4-{origin_tag('a', 'S2')[:9]}"), ("b", "6", "syncd-g-3-oABCDEF12"),
          ("b", "7", "syncd-g-3-ozzzzzzzz"), ("b", "8", "SYNCD-g-3-o12345678"),
          ("b", "9", "syncd-g-x-o12345678"), ("b", "10", "syncd-g-3-o0123456789ABCDEF"),
          ("b", "11", "syncd-a:b-3-o12345678"))
"""Records of a schema-6 ledger: a tagged marker (16 digits), a legacy one, none, a tag one
digit short, an 8-digit one, and markers only a LIKE pattern takes for tagged (upper case,
``_`` matching letters, no link id, a group no marker has)."""


def explain(conn: sqlite3.Connection, query: InSelect, ids: list[str], **params: str) -> str:
    """SQLite's plan for one of the ledger's own queries, as it runs it."""
    compiled = query.stmt.compile(dialect=sqlite_dialect())
    state = compiled.construct_expanded_state({"ids": ids, **params})
    args = [state.parameters[name] for name in state.positiontup or ()]
    return " ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {state.statement}",
                                                 args))


def test_schema_7_tags_the_copies_of_an_older_ledger(tmp_path: Path) -> None:
    """Script 7 fills in the origin tag of every copy an older ledger stored, exactly the
    tag the engine derives (both lengths, nothing else), in batches; the lookups by tag read
    the indexes, not the tables."""
    path = tmp_path / "v6.db"
    with sqlite3.connect(path) as conn:
        at_version(conn, 6)
        conn.executemany("INSERT INTO record (account, external_id, state, marker, "
                         "first_seen_at, observed_at) VALUES (?, ?, 'triggered', ?, "
                         "'2026-01-01 00:00:00', '2026-01-01 00:00:00')", MARKED)
    batch, migrations.FILL_BATCH = migrations.FILL_BATCH, 3  # several batches
    try:
        Ledger.open(url(path)).dispose()
    finally:
        migrations.FILL_BATCH = batch
    with sqlite3.connect(path) as conn:
        tags = dict(conn.execute("SELECT external_id, tag FROM record").fetchall())
        copies = explain(conn, pages._COPIES, ["o1", "o2"], group="g")
        keyed = explain(conn, pages._KEYED, ["o1", "o2"], group="g")
    assert tags == {e: tag_of(m) for _, e, m in MARKED}
    assert {e for e, t in tags.items() if t} == {"1", "5"}
    assert tags["1"] == origin_tag("a", "S1") and tags["5"] == origin_tag("a", "S2")[:9]
    assert "ix_record_tag" in copies and "SCAN record" not in copies, copies
    assert "ix_link_group_key" in keyed, keyed


def test_schema_8_starts_each_record_s_own_time_from_its_vendor_time(tmp_path: Path) -> None:
    """Script 8 adds the own vendor time the step-back check reads; a stored record starts
    from the time that check read before (without it, no step back would be dropped by its own
    time until the record's next observation), except an incident.io one: its stored time can
    be a newer folded escalation time, which would keep back a severity edit made before the
    upgrade (``_behind``). Left NULL, the folded-time check still guards it."""
    path = tmp_path / "v7.db"
    with sqlite3.connect(path) as conn:
        at_version(conn, 7)
        conn.executemany("INSERT INTO account VALUES (?, ?, '2026-01-01 00:00:00')",
                         [("a", "pagerduty"), ("i", "incidentio")])
        conn.executemany("INSERT INTO record (account, external_id, state, vendor_updated_at, "
                         "first_seen_at, observed_at) VALUES (?, ?, 'resolved', ?, "
                         "'2026-01-01 00:00:00', '2026-01-01 00:00:00')",
                         [("a", "1", "2026-01-01 00:05:00.000000"), ("a", "2", None),
                          ("i", "3", "2026-01-01 00:05:00.000000"),
                          ("gone", "4", "2026-01-01 00:05:00.000000")])
    Ledger.open(url(path)).dispose()
    with sqlite3.connect(path) as conn:
        own = dict(conn.execute("SELECT external_id, vendor_own_updated_at FROM record"))
    at = "2026-01-01 00:05:00.000000"
    assert own == {"1": at, "2": None, "3": None, "4": at}


def test_ledger_from_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Ledger.open(url(path)).dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))
    with pytest.raises(LedgerError, match="newer syncd"):
        Ledger.open(url(path))


def _as_nobody(argv: list[str]) -> list[str]:
    """``argv`` run as nobody when we are root (skip when that cannot work here)."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv to drop privileges")
    root = Path(__file__).resolve().parents[2]
    for part in [root, *root.parents, Path(sys.executable).resolve().parent]:
        if not part.stat().st_mode & 0o001:
            pytest.skip(f"{part} is not enterable by other users, so nobody cannot run syncd")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]


def _open_as_nobody(base: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (which imports syncd) as nobody when root, then remove ``base``."""
    argv = _as_nobody([sys.executable, "-c", code])
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              cwd=Path(__file__).resolve().parents[2])
    finally:
        shutil.rmtree(base)


def test_read_only_directory_is_a_clear_error() -> None:
    """The daemon runs as an unprivileged user; root ignores directory permissions, so when the
    tests run as root the check runs in a child process that drops to nobody (setpriv)."""
    base = Path(tempfile.mkdtemp(prefix="syncd-ro-"))  # pytest's tmp_path is root-only
    base.chmod(0o755)
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    code = (
        "import sys\n"
        "from syncd.ledger import Ledger, LedgerError\n"
        "try:\n"
        f"    Ledger.open('sqlite:///{ro}/l.db')\n"
        "except LedgerError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    proc = _open_as_nobody(base, code)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == f"ledger directory {ro} is not writable by this user"


def test_inaccessible_directory_is_a_clear_error() -> None:
    base = Path(tempfile.mkdtemp(prefix="syncd-noaccess-"))
    base.chmod(0o700)
    code = (
        "from syncd.ledger import Ledger, LedgerError\n"
        "try:\n"
        f"    Ledger.open('sqlite:///{base}/sub/l.db')\n"
        "except LedgerError as exc:\n"
        "    print(exc)\n"
    )
    proc = _open_as_nobody(base, code)
    if os.geteuid() != 0:
        pytest.skip("needs root to create a directory another user cannot enter")
    assert proc.stdout.strip() == f"ledger directory {base}/sub is not accessible by this user"


def test_lock_file_left_by_another_user_still_locks() -> None:
    """Root ran `syncd once` by hand and left a root-owned lock file: the syncd user's daemon
    must still lock (flock needs no write access) and a second one must still be refused."""
    if os.geteuid() != 0:
        pytest.skip("needs root to leave a lock file another user cannot write")
    base = Path(tempfile.mkdtemp(prefix="syncd-lock-"))
    base.chmod(0o777)
    (base / "l.db.lock").write_text("")
    (base / "l.db.lock").chmod(0o644)
    url = f"sqlite:///{base}/l.db"
    proc = _open_as_nobody(base, (
        "from syncd.ledger import Ledger, LedgerBusy\n"
        f"first = Ledger.open('{url}', exclusive=True)\n"
        "try:\n"
        f"    Ledger.open('{url}', exclusive=True)\n"
        "except LedgerBusy as exc:\n"
        "    print(exc)\n"
    ))
    assert proc.returncode == 0, proc.stderr
    assert "in use by another syncd (pid unknown" in proc.stdout


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="does not exist"):
        Ledger.open(url(tmp_path / "missing" / "l.db"))


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE stuff (x INTEGER)")
    with pytest.raises(LedgerError, match="not a syncd ledger"):
        Ledger.open(url(path))


def test_oncall_history_does_not_grow_with_window_cuts(tmp_path: Path) -> None:
    """A shift seen by consecutive polls whose windows cut it differently is one row; an
    override that splits it adds rows."""
    from datetime import timedelta

    ledger = Ledger.open(url(tmp_path / "l.db"))
    t0 = utcnow().replace(microsecond=0)
    day = timedelta(days=1)

    def entry(user: str, start, end):  # type: ignore[no-untyped-def]
        return {"schedule_id": "S", "level": 1, "user_id": user, "user_email": None,
                "start": start, "end": end, "schedule_name": None}

    for k in range(5):  # polls a minute apart, each window [now, now + 2 days)
        now = t0 + timedelta(minutes=k)
        window = (now, now + 2 * day)
        rows = [entry("alice", now, t0 + day), entry("bob", t0 + day, now + 2 * day)]
        ledger.call(lambda tx, r=rows, n=now, w=window: tx.record_oncall("pd", r, n, w))
    stored = ledger.call(lambda tx: tx.oncall_at("pd", "S", 1, t0 + timedelta(hours=1)))
    assert [(r.user_id, r.start, r.end) for r in stored] == [("alice", t0, t0 + day)]
    later = ledger.call(lambda tx: tx.oncall_at("pd", "S", 1, t0 + day + timedelta(hours=1)))
    assert [(r.user_id, r.end) for r in later] == [("bob", t0 + timedelta(minutes=4) + 2 * day)]
    assert ledger.call(lambda tx: tx.record_oncall("pd", [], t0, None)) == 0
    with sqlite3.connect(tmp_path / "l.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM oncall_snapshot").fetchone()[0] == 2
    # An override splits alice's shift: carol from +2h to +4h.
    now = t0 + timedelta(minutes=5)
    window = (now, now + 2 * day)
    h = timedelta(hours=1)
    rows = [entry("alice", now, t0 + 2 * h), entry("carol", t0 + 2 * h, t0 + 4 * h),
            entry("alice", t0 + 4 * h, t0 + day), entry("bob", t0 + day, now + 2 * day)]
    ledger.call(lambda tx: tx.record_oncall("pd", rows, now, window))
    at3 = ledger.call(lambda tx: tx.oncall_at("pd", "S", 1, t0 + 3 * h))
    assert [r.user_id for r in at3] == ["carol"]
    at5 = ledger.call(lambda tx: tx.oncall_at("pd", "S", 1, t0 + 5 * h))
    assert [(r.user_id, r.start) for r in at5] == [("alice", t0 + 4 * h)]
