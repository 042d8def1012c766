"""A PostgreSQL ledger on a real server: the same migration scripts give the same schema as
SQLite, the password comes from a secret reference and never shows, replicas starting together
migrate once, and a serialization failure is retried."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import structlog
from pgserver import PASSWORD, PgServer
from sqlalchemy import Connection, inspect, text
from sqlmodel import SQLModel

from syncd import config as config_mod
from syncd.ledger import Ledger, LedgerError, utcnow
from syncd.ledger.migrations import MIGRATIONS, SCHEMA_VERSION, statements
from syncd.ledger.tables import Meta


def _columns(ledger: Ledger) -> dict[str, dict[str, tuple[str, bool]]]:
    """Per table, per column: the type's family and nullability, as the database reports."""
    inspector = inspect(ledger.engine)
    out = {}
    for table in SQLModel.metadata.sorted_tables:
        cols = {}
        for c in inspector.get_columns(table.name):
            kind = type(c["type"]).__name__.upper()
            family = next((f for f in ("INT", "CHAR", "TIME") if f in kind), kind)
            cols[c["name"]] = (family, bool(c["nullable"]))
        out[table.name] = cols
    return out


def _not_null(cols: dict[str, tuple[str, bool]], pks: set[str]) -> dict[str, tuple[str, bool]]:
    return {k: (v[0], False) if k in pks else v for k, v in cols.items()}


def at_version(conn: Connection, version: int) -> None:
    """Make an empty database what release ``version`` of the schema wrote."""
    for script in MIGRATIONS[:version]:
        for stmt in statements(script, "postgresql"):
            conn.execute(text(stmt))
    conn.execute(text("INSERT INTO meta VALUES ('schema_version', :v)"), {"v": str(version)})


def test_same_scripts_same_schema_on_both(tmp_path: Path, pg_url: str) -> None:
    pg = Ledger.open(pg_url)
    lite = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    assert pg.schema_version() == lite.schema_version() == SCHEMA_VERSION
    pg_cols, lite_cols = _columns(pg), _columns(lite)
    for table in SQLModel.metadata.sorted_tables:
        assert set(pg_cols[table.name]) == {c.name for c in table.columns}, table.name
        # Primary keys are NOT NULL on PostgreSQL while SQLite reports its rowid alias nullable.
        pks = {c.name for c in table.primary_key.columns}
        assert _not_null(pg_cols[table.name], pks) == _not_null(lite_cols[table.name], pks), \
            table.name
    pg.dispose()
    lite.dispose()


def test_schema_7_tags_copies_on_postgres_too(postgres: PgServer) -> None:
    """Script 7's fill (in Python, batch by batch) and partial index on PostgreSQL."""
    from sqlalchemy import create_engine
    from test_ledger import MARKED

    from syncd.model import tag_of

    db = postgres.new_database()
    eng = create_engine(postgres.url(db))
    with eng.begin() as conn:
        at_version(conn, 6)
        for account, external_id, marker in MARKED:
            conn.execute(text(
                "INSERT INTO record (account, external_id, state, marker, first_seen_at, "
                "observed_at) VALUES (:a, :e, 'triggered', :m, now(), now())"),
                {"a": account, "e": external_id, "m": marker})
    eng.dispose()
    ledger = Ledger.open(postgres.url(db))
    assert ledger.schema_version() == SCHEMA_VERSION
    with ledger.engine.connect() as conn:
        tags = dict(conn.execute(text("SELECT external_id, tag FROM record")).all())
        indexes = {r[0] for r in conn.execute(text(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'record'"))}
    assert tags == {e: tag_of(m) for _, e, m in MARKED}
    assert "ix_record_tag" in indexes
    ledger.dispose()


def test_schema_8_fills_own_times_on_postgres_too(postgres: PgServer) -> None:
    from sqlalchemy import create_engine

    db = postgres.new_database()
    eng = create_engine(postgres.url(db))
    with eng.begin() as conn:
        at_version(conn, 7)
        conn.execute(text("INSERT INTO account VALUES ('a', 'pagerduty', now()), "
                          "('i', 'incidentio', now())"))
        conn.execute(text(
            "INSERT INTO record (account, external_id, state, vendor_updated_at, first_seen_at, "
            "observed_at) VALUES ('a', '1', 'resolved', '2026-01-01 00:05:00', now(), now()), "
            "('i', '2', 'resolved', '2026-01-01 00:05:00', now(), now())"))
    eng.dispose()
    ledger = Ledger.open(postgres.url(db))
    with ledger.engine.connect() as conn:
        own = conn.execute(text("SELECT external_id, vendor_own_updated_at = vendor_updated_at "
                                "FROM record ORDER BY external_id")).all()
    assert [tuple(r) for r in own] == [("1", True), ("2", None)]
    ledger.dispose()


def test_v2_postgres_ledger_migrates_with_its_outbox(postgres: PgServer) -> None:
    """Script 3 rebuilds the outbox with its rows' ids; on PostgreSQL the identity must then
    continue after them, or the next new row would collide."""
    db = postgres.new_database()
    from sqlalchemy import create_engine

    eng = create_engine(postgres.url(db))
    with eng.begin() as conn:
        at_version(conn, 2)
        conn.execute(text("INSERT INTO link (group_name, origin, created_at) "
                          "VALUES ('g', 'manual', now())"))
        conn.execute(text(
            "INSERT INTO outbox (id, group_name, link_id, account, action, idempotency_key, "
            "next_attempt_at, caused_at, created_at, updated_at) VALUES (41, 'g', 1, 'a', "
            "'acknowledge', 'k41', now(), now(), now(), now())"))
    eng.dispose()
    ledger = Ledger.open(postgres.url(db))
    assert ledger.schema_version() == SCHEMA_VERSION
    from syncd.ledger import outbox
    from syncd.model import Action

    def owe(tx):  # type: ignore[no-untyped-def]
        row = outbox.enqueue(tx, group="g", link_id=1, record_id=None, account="a",
                             action=Action.RESOLVE, value=None, key="k42", cause=None,
                             caused_at=utcnow(), now=utcnow())
        tx.session.flush()
        return row.id

    assert ledger.call(owe) == 42
    ledger.dispose()


def test_password_from_a_secret_reference_never_shows(
        postgres: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = postgres.new_database()
    monkeypatch.setenv("SYNCD_TEST_PG_PASSWORD", PASSWORD)
    path = tmp_path / "syncd.toml"
    path.write_text(f'[ledger]\nurl = "{postgres.url(db, password=False)}"\n'
                    'password = "env:SYNCD_TEST_PG_PASSWORD"\n')
    cfg = config_mod.load(path)
    assert PASSWORD not in repr(cfg.ledger)
    with structlog.testing.capture_logs() as logs:
        ledger = Ledger.open(cfg.ledger_url, password=cfg.ledger_password)
        assert ledger.schema_version() == SCHEMA_VERSION
    assert PASSWORD not in repr(logs)
    ledger.dispose()
    # A wrong password is a one-line error that names the server, not the password.
    with pytest.raises(LedgerError) as err:
        Ledger.open(cfg.ledger_url, password="wrong-" + PASSWORD)
    assert "password authentication failed" in str(err.value)
    assert PASSWORD not in str(err.value)


def test_password_in_the_url_is_redacted(postgres: PgServer, tmp_path: Path) -> None:
    from syncd import secrets

    path = tmp_path / "syncd.toml"
    path.write_text(f'[ledger]\nurl = "{postgres.url("postgres")}"\n')
    cfg = config_mod.load(path)
    assert PASSWORD in secrets.known()  # the log redactor scrubs it from every event
    from syncd.ledger.store import _safe

    assert PASSWORD not in _safe(cfg.ledger_url) and "***" in _safe(cfg.ledger_url)


def test_replicas_starting_together_migrate_once(postgres: PgServer) -> None:
    db = postgres.new_database()
    errors: list[BaseException] = []
    opened: list[Ledger] = []

    def open_one() -> None:
        try:
            opened.append(Ledger.open(postgres.url(db)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert {ledger.schema_version() for ledger in opened} == {SCHEMA_VERSION}
    for ledger in opened:
        ledger.dispose()


def test_serialization_failure_is_retried(pg_url: str) -> None:
    """Two transactions read the same row and both write it: PostgreSQL aborts one
    (SERIALIZABLE); Ledger.call runs it again and both updates land, none lost."""
    ledger = Ledger.open(pg_url)
    ledger.call(lambda tx: tx.add(Meta(key="n", value="0")))
    barrier = threading.Barrier(2)
    runs: list[int] = []

    def bump(tx):  # type: ignore[no-untyped-def]
        row = tx.session.get(Meta, "n")
        runs.append(1)
        if len(runs) <= 2:
            barrier.wait(timeout=10)  # both have read before either writes
        row.value = str(int(row.value) + 1)

    threads = [threading.Thread(target=ledger.call, args=(bump,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.call(lambda tx: tx.session.get(Meta, "n").value) == "2"
    assert len(runs) == 3  # one of the two ran again
    ledger.dispose()


def test_sqlite_scripts_unchanged(tmp_path: Path) -> None:
    """The translation leaves SQLite's statements as they always were."""
    path = tmp_path / "l.db"
    with sqlite3.connect(path) as conn:
        for script in MIGRATIONS:
            for stmt in statements(script):
                assert "IDENTITY" not in stmt and "setval" not in stmt
                conn.execute(stmt)
