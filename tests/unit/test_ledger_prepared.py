"""A page's statements run on SQLite's driver (syncd.ledger.prepared) store and read exactly
what SQLAlchemy's Core path stores and reads, in the same transaction, with the same errors."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from syncd.ledger import Agreed, Ledger, Link, Outbox, Record, Tx
from syncd.ledger.prepared import MAX_LENGTHS, InSelect, Many
from syncd.ledger.tables import UTCDateTime

T0 = datetime(2026, 11, 1, 12, 30, 5, 123456, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))

_OUTBOX = Outbox.__table__  # type: ignore[attr-defined]
_AGREED = Agreed.__table__  # type: ignore[attr-defined]
_SUPERSEDE = (update(_OUTBOX).where(_OUTBOX.c.id == bindparam("b_id"))
              .values(status="superseded", last_error=bindparam("b_reason"),
                      updated_at=bindparam("b_now")))
_BY_LINK = (select(_AGREED.c.link_id, _AGREED.c.field, _AGREED.c.value, _AGREED.c.changed_at)
            .where(_AGREED.c.field == bindparam("field"),
                   _AGREED.c.link_id.in_(bindparam("ids", expanding=True)))
            .order_by(_AGREED.c.link_id))


def opened(path: Path, n: int = 5) -> Ledger:
    """A ledger with links and records 1..n (what outbox and agreed rows refer to)."""
    ledger = Ledger.open(f"sqlite:///{path}")

    def seed(tx: Tx) -> None:
        tx.core.execute(insert(Link.__table__), [  # type: ignore[attr-defined]
            dict(id=i, group_name="g", key=f"k{i}", origin="correlate", created_at=T0)
            for i in range(1, n + 1)])
        tx.core.execute(insert(Record.__table__), [  # type: ignore[attr-defined]
            dict(id=i, account="vo", external_id=str(i), state="triggered", first_seen_at=T0,
                 observed_at=T0) for i in range(1, n + 1)])

    ledger.call(seed)
    return ledger


def outbox_row(n: int, at: datetime | None) -> dict[str, Any]:
    return dict(group_name="g", link_id=n, record_id=n, account="vo", action="acknowledge",
                value=None, idempotency_key=f"k{n}", status="pending", attempts=0,
                next_attempt_at=T0, last_error=None, result=None, cause_account="pd",
                caused_at=at or T0, created_at=T0, updated_at=T0.astimezone(PLUS_TWO))


def stored(path: Path, table: str) -> list[tuple[Any, ...]]:
    """The rows as SQLite holds them (text, not what SQLAlchemy makes of it), without ids."""
    with sqlite3.connect(path) as conn:
        cursor = conn.execute(f"SELECT * FROM {table} ORDER BY id")
        names = [d[0] for d in cursor.description]
        return [tuple(v for n, v in zip(names, row, strict=True) if n != "id")
                for row in cursor.fetchall()]


def test_many_stores_what_core_stores(tmp_path: Path) -> None:
    """Same text for every datetime (UTC, another offset, the same object again), the values
    a statement holds itself (``.values(status=...)``), NULLs; updates by ``bindparam``."""
    rows = [outbox_row(1, None), outbox_row(2, T0 + timedelta(seconds=1)),
            outbox_row(3, (T0 + timedelta(hours=1)).astimezone(PLUS_TWO))]
    results = []
    for name, write in (
            ("core", lambda tx, stmt, rows: tx.core.execute(stmt, rows)),
            ("prepared", lambda tx, stmt, rows: Many(stmt)(tx.core, rows))):
        path = tmp_path / f"{name}.db"
        ledger = opened(path)

        def page(tx: Tx, write: Any = write) -> None:
            write(tx, insert(_OUTBOX), rows)
            write(tx, _SUPERSEDE, [{"b_id": 2, "b_reason": "newer", "b_now": T0},
                                   {"b_id": 3, "b_reason": None, "b_now": T0}])

        ledger.call(page)
        ledger.dispose()
        results.append(stored(path, "outbox"))
    core, prepared = results
    assert prepared == core
    assert prepared[1][7:10] == ("superseded", 0, "2026-11-01 12:30:05.123456")


def test_many_fills_in_column_defaults_as_core_does(tmp_path: Path) -> None:
    """Rows that leave out defaulted columns (``status``, ``attempts``) get the defaults, not
    NULL (which failed NOT NULL, or was stored silently where NULL is allowed)."""
    rows = [{k: v for k, v in outbox_row(n, None).items() if k not in ("status", "attempts")}
            for n in (1, 2)]
    results = []
    for name, write in (
            ("core", lambda tx, rows: tx.core.execute(insert(_OUTBOX), rows)),
            ("prepared", lambda tx, rows: Many(insert(_OUTBOX))(tx.core, rows))):
        path = tmp_path / f"{name}.db"
        ledger = opened(path)
        ledger.call(lambda tx, write=write: write(tx, rows))
        ledger.dispose()
        results.append(stored(path, "outbox"))
    core, prepared = results
    assert prepared == core
    assert prepared[0][7:9] == ("pending", 0)


def test_in_select_reads_what_core_reads(tmp_path: Path) -> None:
    ledger = opened(tmp_path / "l.db")
    ledger.call(lambda tx: tx.core.execute(insert(_AGREED), [
        dict(link_id=n, field=f, value=f"{f}{n}", source_account="pd",
             changed_at=T0 + timedelta(minutes=n)) for n in range(1, 6) for f in ("a", "b")]))
    query = InSelect(_BY_LINK)

    def both(tx: Tx) -> tuple[list[Any], list[Any]]:
        ids = [4, 2, 9, 1]
        return (query(tx.core, ids, field="b"),
                [tuple(r) for r in tx.core.execute(_BY_LINK, {"ids": ids, "field": "b"})])

    prepared, core = ledger.call(both)
    assert prepared == core
    assert [r.link_id for r in prepared] == [1, 2, 4]
    assert prepared[0].changed_at == T0 + timedelta(minutes=1)
    assert prepared[0].changed_at.tzinfo is UTC
    assert ledger.call(lambda tx: query(tx.core, [])) == []
    # More IN-list lengths than it keeps SQL for: the others are laid out on every call.
    found = ledger.call(lambda tx: [len(query(tx.core, list(range(1, n + 1)), field="a"))
                                    for n in range(1, MAX_LENGTHS + 20)])
    assert found == [min(n, 5) for n in range(1, MAX_LENGTHS + 20)]


def test_driver_errors_reach_callers_as_sqlalchemy_errors(tmp_path: Path) -> None:
    """A constraint the driver reports is SQLAlchemy's IntegrityError, as through Core, and
    the transaction rolls back whole."""
    ledger = opened(tmp_path / "l.db")
    write = Many(insert(_AGREED))
    row = dict(link_id=1, field="state", value="acknowledged", source_account="pd",
               changed_at=T0)

    def twice(tx: Tx) -> None:
        write(tx.core, [row])
        write(tx.core, [row])

    with pytest.raises(IntegrityError):
        ledger.call(twice)
    assert ledger.call(lambda tx: tx.agreed(1)) == {}


def test_utc_datetime_text_does_not_stick_to_an_earlier_value() -> None:
    """The bind processor remembers the last datetime it turned into text (a page binds its
    clock reading into most rows): other values, equal or not, still get their own text."""
    from sqlalchemy.dialects import sqlite

    process = UTCDateTime().bind_processor(sqlite.dialect())
    later = T0 + timedelta(microseconds=1)
    assert [process(v) for v in (T0, T0, later, T0.astimezone(PLUS_TWO), None, T0)] == [
        "2026-11-01 12:30:05.123456", "2026-11-01 12:30:05.123456",
        "2026-11-01 12:30:05.123457", "2026-11-01 12:30:05.123456", None,
        "2026-11-01 12:30:05.123456"]
    with pytest.raises(ValueError):
        process(datetime(2026, 1, 1))


def test_kept_sql_is_shared_by_engines_not_kept_per_engine(tmp_path: Path) -> None:
    """Every engine has its own dialect object; the SQL an InSelect keeps is per kind of
    dialect, so opening ledger after ledger (tests, embedding code) does not grow it."""
    stmt = InSelect(_BY_LINK)
    for n in range(3):
        ledger = opened(tmp_path / f"l{n}.db")
        ledger.call(lambda tx: stmt(tx.core, [1, 2], field="state"))
        ledger.dispose()
    assert len(stmt._plans) == 1 and len(stmt._plans[next(iter(stmt._plans))]) == 1
    assert len(stmt._compiled) == 1
