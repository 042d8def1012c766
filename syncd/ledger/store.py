"""Opening the ledger and the queries the engine needs; the only place that knows SQL.

Every unit of engine work (one poll page, one push batch) is one transaction: :meth:`Ledger.run`
executes a synchronous function with a :class:`Tx` in a worker thread, so the event loop never
blocks on the database, and SQLite writers are serialised through one capacity limiter instead of
fighting over the file lock.

A PostgreSQL ledger (``postgresql+psycopg://``, see :mod:`.postgres`) runs the same scripts and
the same transactions, SERIALIZABLE, retried on a serialization failure; replicas sharing it
elect a leader with :mod:`.lease`, and with a lease installed (:attr:`Ledger.fence`) every
transaction of :meth:`Ledger.run` checks this process's fencing token before it commits.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import structlog
from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, text
from sqlalchemy.exc import DatabaseError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, SQLModel, col, select

from syncd import metrics, secrets
from syncd.ledger import outbox, postgres
from syncd.ledger.errors import LedgerDamaged, LedgerError, LedgerMissing, LedgerWriteError
from syncd.ledger.lock import LedgerLock
from syncd.ledger.migrations import FILLS, MIGRATIONS, SCHEMA_VERSION, statements
from syncd.ledger.prepared import Many
from syncd.ledger.tables import (
    Account,
    Agreed,
    Audit,
    Link,
    LinkMember,
    Meta,
    OnCallSnapshot,
    Outbox,
    PollCursor,
    Record,
)
from syncd.model import Action

P = ParamSpec("P")
T = TypeVar("T")


SQLITE_MAGIC = b"SQLite format 3\x00"
RECOVERY = "restore it from a backup or start a new ledger (docs/security.md, Ledger file)"

WRITE_FAILURES = (
    ("database or disk is full", "disk full"),
    ("database is locked", "locked"),
    ("database table is locked", "locked"),
    ("disk i/o error", "I/O error"),
    ("readonly database", "read-only"),
)
"""SQLite's messages for failures that come from outside syncd, and the short reason each is
reported under (log event, ``/readyz``, metric label)."""

SPACE_PROBE_BYTES = 512 * 1024
"""Room a write must find before a ledger that failed with "disk full" counts as writable."""

SQLITE_CACHE_KIB = 500
"""SQLite's page cache per connection (``PRAGMA cache_size``; SQLite's default is 2,000 KiB).
The daemon holds two connections and, idle with 10,000 open incidents per account, filled
2.7 MB of SQLite memory with the default against 1.2 MB with this (``sqlite3_status64``):
``bench/idle.py`` RSS 80.4-81.3 MB against 82.3-82.9 at 10,000 (at 1,000 the cache is not
full either way: no difference). The ledger benchmark's ratios to raw SQLite, whose
connection keeps the default, did not move (medians of 5 alternating runs each way: reconcile
1.31 vs 1.40, inserts 1.33 vs 1.30, unchanged 1.26 vs 1.22): the pages a pass reads come from
the operating system's file cache either way (docs/benchmarks.md, 2026-12-01 morning)."""

log = structlog.get_logger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """One ledger database. Open with :meth:`open`, which checks the file, then creates or
    migrates the schema.

    ``failure`` is the reason the last transaction failed for an outside cause (``"disk full"``,
    ``"locked"``, ...) until a write succeeds again; it is logged once when it starts
    (``ledger.write_failed``) and once when it ends (``ledger.recovered``), not on every cycle.
    """

    def __init__(self, engine: Engine, url: str, lock: LedgerLock | None = None) -> None:
        self.engine = engine
        self.url = url
        self.lock = lock
        self.failure: str | None = None
        self._failure_lock = threading.Lock()
        self._page_cap: int | None = None
        self._page_cap_used = False
        self.fence: Callable[[Tx], None] | None = None
        """Set by a replica that holds a lease: checks its fencing token in a transaction."""
        self._limiter = anyio.CapacityLimiter(1)
        self._lease_limiter = anyio.CapacityLimiter(1)

    @classmethod
    def open(cls, url: str, *, busy_timeout: float = 5.0, migrate: bool = True,
             exclusive: bool = False, password: str | None = None) -> Ledger:
        """``exclusive``: take the ledger's lock for as long as this object lives (the daemon,
        ``once``, a repairing ``oncall``); raises :class:`LedgerBusy` naming the holder.
        ``password``: the resolved ``[ledger] password`` (PostgreSQL), overriding the URL's.
        ``migrate=False`` (the read-only views): neither create a missing SQLite file nor
        write the schema; a view run as root would leave the file root-owned, and the service
        user could not write it."""
        lock = None
        created = False
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///") :])
            if not migrate and not path.exists():
                raise LedgerMissing(
                    f"ledger {path} does not exist yet: `syncd run` (or `syncd once`) creates "
                    "it; this command only reads it")
            check_sqlite_path(path)
            if exclusive:
                lock = LedgerLock(path)
                lock.acquire(str(path))
            try:
                created = not _check_sqlite_file(path, busy_timeout)
            except BaseException:
                if lock is not None:
                    lock.release()
                raise
            engine = create_engine(
                url, connect_args={"timeout": busy_timeout, "check_same_thread": False}
            )
            _sqlite_pragmas(engine, busy_timeout)
        elif postgres.is_postgres(url):
            engine = postgres.engine(url, password)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        ledger = cls(engine, url, lock)
        try:
            ledger._prepare(migrate)
        except OperationalError as exc:
            ledger.dispose()
            raise LedgerError(f"cannot open ledger {_safe(url)}: {exc.orig}") from None
        except DatabaseError as exc:
            ledger.dispose()
            raise LedgerDamaged(
                f"ledger {_safe(url)} is damaged ({exc.orig}); {RECOVERY}") from None
        except BaseException:
            ledger.dispose()
            raise
        if created:
            log.info("ledger.created", ledger=_safe(url))
        metrics.LEDGER_WRITABLE.set(1)
        return ledger

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _schema_transaction(self) -> Iterator[Connection]:
        """The transaction that checks and migrates the schema. On PostgreSQL it holds the
        migration lock and reads at READ COMMITTED, so a replica that waited for another's
        migration sees the tables that one created."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                if self.dialect == "postgresql":
                    postgres.lock_migrations(conn)
                yield conn

    def _prepare(self, migrate: bool) -> None:
        with self._schema_transaction() as conn:
            tables = set(inspect(conn).get_table_names())
            if not tables and not migrate:
                # A database with no tables at all (PostgreSQL before the first run, or an
                # empty SQLite file) is a ledger not there yet, not one of schema version 0.
                raise LedgerMissing(
                    f"ledger {_safe(self.url)} has no syncd tables yet: `syncd run` (or "
                    "`syncd once`) creates them; this command only reads it")
            version = 0
            if "meta" in tables:
                row = conn.execute(
                    text("SELECT value FROM meta WHERE key = 'schema_version'")
                ).first()
                if row is None and tables - {"meta"}:
                    raise LedgerDamaged(
                        f"ledger {_safe(self.url)} is damaged: it has syncd tables but no schema "
                        f"version row in its meta table; {RECOVERY}")
                try:
                    version = int(row[0]) if row else 0
                except ValueError:
                    raise LedgerDamaged(
                        f"ledger {_safe(self.url)} is damaged: its schema version "
                        f"{str(row[0])[:20]!r} is not a number; {RECOVERY}") from None
            elif tables:
                raise LedgerDamaged(
                    f"{_safe(self.url)} is not a syncd ledger (it has tables but no meta table); "
                    "syncd leaves it untouched: point [ledger] at another file"
                )
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"ledger {_safe(self.url)} has schema version {version}, written by a newer "
                    f"syncd; this release understands up to {SCHEMA_VERSION}. Upgrade syncd "
                    "(downgrading the ledger would lose state)."
                )
            if version < SCHEMA_VERSION:
                if not migrate:
                    raise LedgerError(
                        f"ledger {_safe(self.url)} has schema version {version}, this syncd "
                        f"reads {SCHEMA_VERSION}: `syncd run` (or `syncd once`) migrates it; "
                        "this command only reads it")
                for number in range(version + 1, SCHEMA_VERSION + 1):
                    for stmt in statements(MIGRATIONS[number - 1], self.dialect):
                        conn.execute(text(stmt))
                    if number in FILLS:
                        FILLS[number](conn)
                conn.execute(
                    text(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', :v) "
                        "ON CONFLICT (key) DO UPDATE SET value = :v"
                    ),
                    {"v": str(SCHEMA_VERSION)},
                )
            missing = _missing_schema(conn)
            if missing:
                raise LedgerDamaged(
                    f"ledger {_safe(self.url)} is damaged: {', '.join(missing[:5])} "
                    f"missing from schema version {SCHEMA_VERSION}; {RECOVERY}")

    def schema_version(self) -> int:
        with Session(self.engine) as session:
            row = session.get(Meta, "schema_version")
            return int(row.value) if row else 0

    def cap_growth(self, pages: int | None) -> None:
        """Fault-injection seam for tests where no small filesystem can be mounted: SQLite's own
        ``max_page_count`` makes any write that grows the database fail with the genuine
        "database or disk is full" error, as a full disk would. ``None`` lifts the cap."""
        self._page_cap = pages
        self._page_cap_used = True

    def page_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())

    @contextmanager
    def transaction(self, *, fenced: bool = True) -> Iterator[Tx]:
        """One transaction. ``fenced`` (and a lease installed): it commits only if this
        process's fencing token is still the lease's, checked by its first statement, the lease
        row then locked FOR SHARE until the commit (no takeover and no renewal in between)."""
        with Session(self.engine, expire_on_commit=False) as session:
            tx = Tx(session, self.fence if fenced else None)
            if self._page_cap_used:  # the cap is per connection: set (or lift) it on each
                session.execute(text(f"PRAGMA max_page_count = {self._page_cap or 2**31}"))
            try:
                # The fence is the first statement: PostgreSQL takes the transaction's snapshot
                # there, so the lease row it locks is the newest. Checked last instead, a renewal
                # committed meanwhile (every ttl / 3) made the FOR SHARE a serialization failure:
                # every transaction longer than that was rolled back, retried and lost.
                tx.fence()
                yield tx
                tx.flush_audit()
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def call(self, fn: Callable[..., T], *args: Any, fenced: bool = True) -> T:
        """Run ``fn(tx, *args)`` in one transaction, synchronously (CLI and tests).

        A failure from outside (disk full, the write lock held elsewhere) rolls the whole
        transaction back, so a poll page's cursor stays where it was and the page is read
        again later; it raises :class:`LedgerWriteError` with a short reason instead of a
        driver traceback. On PostgreSQL a serialization failure runs it again first: ``fn``
        must touch nothing outside the transaction that a second run would repeat wrongly (see
        :mod:`.postgres`)."""
        try:
            result = self._serialized(fn, args, fenced)
        except (OperationalError, sqlite3.OperationalError) as exc:
            raise self._write_failed(exc) from None
        if self.failure is not None:
            self._check_recovered()
        return result

    def _serialized(self, fn: Callable[..., T], args: tuple[Any, ...], fenced: bool) -> T:
        for attempt in range(postgres.RETRIES):
            try:
                with self.transaction(fenced=fenced) as tx:
                    return fn(tx, *args)
            except DBAPIError as exc:
                if not postgres.retryable(exc) or attempt == postgres.RETRIES - 1:
                    raise
                time.sleep(random.uniform(0, 0.01 * 2 ** attempt))
        raise AssertionError("unreachable")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(tx, *args)`` in one transaction on a worker thread (fenced, when this
        process holds a lease)."""
        return await anyio.to_thread.run_sync(self.call, fn, *args, limiter=self._limiter)

    def _write_failed(self, exc: Exception) -> Exception:
        """Note a failed transaction; returns the exception to raise."""
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        reason = write_failure_reason(detail)
        if reason is None:
            return exc  # a bug or a damaged file, not a state: the traceback is wanted
        metrics.LEDGER_WRITE_FAILURES.labels(reason).inc()
        with self._failure_lock:
            changed, self.failure = self.failure != reason, reason
        if changed:
            metrics.LEDGER_WRITABLE.set(0)
            log.error("ledger.write_failed", reason=reason, detail=detail,
                      ledger=_safe(self.url))
        return LedgerWriteError(reason, detail)

    def _check_recovered(self) -> None:
        """A transaction succeeded while failing. On a full disk reads still pass, and so do
        small writes that fit in space SQLite already holds, while a poll page does not: only a
        write that needs room proves recovery (committed, so its pages really reach the WAL),
        else the state would flap on every cycle."""
        sqlite = self.url.startswith("sqlite:")
        try:
            with self.transaction() as tx:
                if sqlite:
                    tx.probe_space(SPACE_PROBE_BYTES)
                else:
                    tx.probe_write()
            if sqlite:
                with self.transaction() as tx:
                    tx.probe_space(None)
        except (OperationalError, sqlite3.OperationalError) as exc:
            self._write_failed(exc)
            return
        with self._failure_lock:
            was, self.failure = self.failure, None
        if was is not None:
            metrics.LEDGER_WRITABLE.set(1)
            log.info("ledger.recovered", reason=was, ledger=_safe(self.url))

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Like :meth:`run` without the fence: views and probes that a standby runs too, and
        an ex-leader's record that a write the lease guard refused never left (an override's
        row, see :meth:`~syncd.engine.dispatcher.Dispatcher.push_override`)."""
        return await anyio.to_thread.run_sync(
            lambda: self.call(fn, *args, fenced=False), limiter=self._limiter)

    async def run_lease(self, fn: Callable[..., T], *args: Any, abandon: bool = False) -> T:
        """A lease transaction: unfenced, and on its own thread, so a renewal never queues
        behind the engine's transactions. ``abandon``: a cancellation leaves the thread to
        finish on its own (the release at a stop, which must not outlast the stop's budget)."""
        return await anyio.to_thread.run_sync(
            lambda: self.call(fn, *args, fenced=False), limiter=self._lease_limiter,
            abandon_on_cancel=abandon)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.lock is not None:
            self.lock.release()

    def size_bytes(self) -> int | None:
        if not self.url.startswith("sqlite:///"):
            return None
        path = Path(self.url[len("sqlite:///") :])
        return sum(
            p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists()
        )


def _safe(url: str) -> str:
    """A URL without its password, for messages."""
    if postgres.is_postgres(url):
        return postgres.safe_url(url)
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def check_sqlite_path(path: Path) -> None:
    """Raise LedgerError when this user cannot create or write the ledger at ``path``; writes
    nothing, so ``check-config`` runs it too."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.stat()
    except PermissionError:
        raise LedgerError(f"ledger directory {directory} is not accessible by this user") from None
    except FileNotFoundError:
        pass
    if not directory.exists():
        raise LedgerError(f"ledger directory {directory} does not exist")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise LedgerError(f"ledger file {path} is not readable and writable by this user")
        if not os.access(directory, os.W_OK):
            raise LedgerError(
                f"ledger directory {directory} is not writable (SQLite needs it for the WAL)"
            )
    elif not os.access(directory, os.W_OK):
        raise LedgerError(f"ledger directory {directory} is not writable by this user")


def write_failure_reason(message: str) -> str | None:
    """The short reason for an SQLite error message that comes from outside syncd, else None."""
    lowered = message.lower()
    return next((reason for text_, reason in WRITE_FAILURES if text_ in lowered), None)


def _check_sqlite_file(path: Path, busy_timeout: float) -> bool:
    """Whether ``path`` holds a ledger to open; raises :class:`LedgerDamaged` for a file that
    is empty, not SQLite, or that SQLite finds damaged. Never writes to the file.

    An existing 0-byte file is refused rather than initialised: it is what a truncated ledger
    looks like, and starting afresh there would silently drop its cursors and pending pushes.
    """
    if not path.exists():
        return False
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise LedgerError(f"cannot read ledger file {path}: {exc.strerror}") from None
    if not header:
        raise LedgerDamaged(
            f"ledger file {path} is empty (0 bytes) and syncd will not initialise an existing "
            "file; restore it from a backup, or delete it to start a new ledger")
    if header != SQLITE_MAGIC:
        raise LedgerDamaged(
            f"ledger file {path} is not an SQLite database (damaged header, or another kind of "
            "file); syncd leaves it untouched: restore it from a backup or point [ledger] at "
            "a new file")
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout)
        try:
            rows = conn.execute("PRAGMA quick_check(3)").fetchall()
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        raise LedgerError(f"cannot open ledger {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise LedgerDamaged(f"ledger file {path} is damaged ({exc}); {RECOVERY}") from None
    problems = [str(r[0]) for r in rows if r and r[0] != "ok"]
    if problems:
        first = problems[0].splitlines()[0][:150]
        raise LedgerDamaged(
            f"ledger file {path} is damaged (SQLite quick_check: {first}); {RECOVERY}")
    if tables and "meta" not in tables:
        # Checked here, before the engine's first connection switches the file to WAL.
        raise LedgerDamaged(
            f"{path} is not a syncd ledger (it has tables but no meta table); syncd leaves it "
            "untouched: point [ledger] at another file")
    return True


def _missing_schema(conn: Connection) -> list[str]:
    """Tables and columns the queries need that the database lacks (a dropped table or column:
    the schema version row says current, the file says otherwise)."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    missing: list[str] = []
    for table in SQLModel.metadata.sorted_tables:  # every table model the queries use
        if table.name not in present:
            missing.append(f"table {table.name}")
            continue
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        missing += [f"column {table.name}.{c.name}" for c in table.columns if c.name not in columns]
    return missing


def _sqlite_pragmas(engine: Engine, busy_timeout: float) -> None:
    """WAL, a busy timeout, a smaller page cache (:data:`SQLITE_CACHE_KIB`), and real
    transactions.

    pysqlite's legacy mode issues no BEGIN before DDL, so a migration killed half-way would
    leave half a schema; the SQLAlchemy recipe for SQLite transactions (driver autocommit off,
    BEGIN emitted by us) makes every transaction, DDL included, atomic. BEGIN IMMEDIATE takes
    the write lock up front, so two writers wait on the busy timeout instead of one failing
    with "database is locked" when it upgrades a read lock.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")  # negative: KiB, not pages
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Straight to the driver: every transaction begins here, and the statement machinery
        # around exec_driver_sql costs more than the BEGIN itself. Its errors (a lock held past
        # the busy timeout) reach callers wrapped as SQLAlchemy's, as that machinery would.
        try:
            conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from None


_AUDIT_TABLE = Audit.__table__  # type: ignore[attr-defined]
_AUDIT_COLUMNS = tuple(c.name for c in _AUDIT_TABLE.columns if c.name != "id")
_AUDIT_INSERT = Many(_AUDIT_TABLE.insert())


class Tx:
    """The engine's vocabulary over one transaction. Returns table objects; raises nothing
    vendor- or SQL-specific to callers beyond SQLAlchemy errors on a broken database."""

    def __init__(self, session: Session, fence: Callable[[Tx], None] | None = None) -> None:
        self.session = session
        self._fence = fence
        self._audit: list[dict[str, Any]] = []

    def fence(self) -> None:
        """Check this process's fencing token now, once per transaction (the lease row stays
        locked FOR SHARE until the end of it); a no-op without a lease."""
        if self._fence is not None:
            fence, self._fence = self._fence, None
            fence(self)

    @property
    def core(self) -> Connection:
        """The transaction's connection, for the page-at-a-time statements (SQLAlchemy Core:
        no ORM objects, one statement per page). ORM changes not yet flushed are invisible to
        it: callers that mixed both flush first (:meth:`flush`)."""
        return self.session.connection()

    def flush(self) -> None:
        self.session.flush()

    def keep_loaded(self, model: Any, key: Any, values: Mapping[str, Any]) -> None:
        """After a Core write of ``values`` to the row ``key`` of ``model``: if this
        transaction holds that row as an ORM object, give it the written values (as committed
        ones, so they are not written again) instead of leaving it stale."""
        if not self.session.identity_map:
            return
        obj = self.session.identity_map.get(
            (model, key if isinstance(key, tuple) else (key,), None))
        if obj is not None:
            for name, value in values.items():
                set_committed_value(obj, name, value)

    # ----------------------------------------------------------------- accounts and cursors

    def ensure_account(self, name: str, vendor: str) -> None:
        if self.session.get(Account, name) is None:
            # Replicas starting together may both insert: the second one's insert is a no-op.
            try:
                with self.session.begin_nested():
                    self.session.add(Account(name=name, vendor=vendor, created_at=utcnow()))
            except IntegrityError:
                pass

    def accounts(self) -> list[Account]:
        return list(self.session.exec(select(Account).order_by(Account.name)))

    def cursor(self, account: str) -> PollCursor:
        row = self.session.get(PollCursor, account)
        if row is None:
            row = PollCursor(account=account)
            self.session.add(row)
        return row

    def cursors(self) -> list[PollCursor]:
        return list(self.session.exec(select(PollCursor).order_by(PollCursor.account)))

    # ----------------------------------------------------------------- records

    def record(self, account: str, external_id: str) -> Record | None:
        return self.session.exec(
            select(Record).where(Record.account == account, Record.external_id == external_id)
        ).first()

    def records(self, account: str, external_ids: Sequence[str]) -> dict[str, Record]:
        """Records of one account by external id, in one query, as objects (views and tests;
        a poll page reads them with :func:`syncd.ledger.records.load`)."""
        if not external_ids:
            return {}
        rows = self.session.exec(select(Record).where(
            Record.account == account, col(Record.external_id).in_(list(set(external_ids)))))
        return {r.external_id: r for r in rows}

    def records_by_ids(self, ids: Iterable[int]) -> dict[int, Record]:
        ids = list(ids)
        if not ids:
            return {}
        rows = self.session.exec(select(Record).where(col(Record.id).in_(ids)))
        return {r.id: r for r in rows if r.id is not None}

    def add(self, row: Any) -> Any:
        self.session.add(row)
        self.session.flush()
        return row

    def bulk_records(self, rows: Sequence[dict[str, Any]]) -> None:
        """Fast insert for seeding benchmarks; rows are Record column dicts."""
        self.session.execute(Record.__table__.insert(), list(rows))  # type: ignore[attr-defined]

    # ----------------------------------------------------------------- links

    def link(self, link_id: int) -> Link | None:
        return self.session.get(Link, link_id)

    def link_of(self, group: str, record_id: int) -> Link | None:
        member = self.session.exec(
            select(LinkMember).where(
                LinkMember.group_name == group, LinkMember.record_id == record_id
            )
        ).first()
        return None if member is None else self.session.get(Link, member.link_id)

    def links_of_record(self, record_id: int) -> list[tuple[LinkMember, Link]]:
        rows = self.session.exec(
            select(LinkMember, Link)
            .join(Link, col(Link.id) == LinkMember.link_id)
            .where(LinkMember.record_id == record_id)
        )
        return list(rows)

    def new_link(self, group: str, key: str | None, origin: str) -> Link:
        return self.add(Link(group_name=group, key=key, origin=origin, created_at=utcnow()))

    def add_member(self, link: Link, record: Record) -> LinkMember:
        assert link.id is not None and record.id is not None
        member = LinkMember(link_id=link.id, record_id=record.id, group_name=link.group_name,
                            account=record.account)
        self.session.add(member)  # autoflushed before the next query reads link members
        return member

    def remove_member(self, link_id: int, record_id: int) -> bool:
        member = self.session.exec(
            select(LinkMember).where(
                LinkMember.link_id == link_id, LinkMember.record_id == record_id
            )
        ).first()
        if member is None:
            return False
        self.session.delete(member)
        outbox.withdraw(self, link_id, record_id, "unlinked", utcnow())
        self.session.flush()
        return True

    def members(self, link_id: int) -> list[tuple[LinkMember, Record]]:
        rows = self.session.exec(
            select(LinkMember, Record)
            .join(Record, col(Record.id) == LinkMember.record_id)
            .where(LinkMember.link_id == link_id)
            .order_by(LinkMember.account)
        )
        return list(rows)

    def links(self, group: str | None = None, *, limit: int = 1000,
              open_only: bool = False) -> list[Link]:
        query = select(Link).order_by(col(Link.id).desc()).limit(limit)
        if group:
            query = query.where(Link.group_name == group)
        if open_only:
            query = query.join(
                Agreed, (col(Agreed.link_id) == Link.id) & (Agreed.field == "state")
            ).where(Agreed.value != "resolved")
        return list(self.session.exec(query))

    # ----------------------------------------------------------------- agreed values

    def agreed(self, link_id: int) -> dict[str, Agreed]:
        rows = self.session.exec(select(Agreed).where(Agreed.link_id == link_id))
        return {r.field: r for r in rows}

    def set_agreed(self, link_id: int, field: str, value: str | None, source: str | None,
                   at: datetime) -> None:
        """One agreed value (an operator's unlink); a page's go through
        :func:`syncd.ledger.pages.put_agreed`."""
        row = self.session.get(Agreed, (link_id, field))
        if row is None:
            self.session.add(Agreed(link_id=link_id, field=field, value=value,
                              source_account=source, changed_at=at))
        else:
            row.value, row.source_account, row.changed_at = value, source, at

    # ----------------------------------------------------------------- outbox (reads; the
    # status changes are syncd.ledger.outbox's)

    def due(self, account: str, now: datetime, limit: int = 1000) -> list[Outbox]:
        """Rows the dispatcher's rounds push. On-call overrides are not among them: the on-call
        service pushes each one right after owing it (see syncd.engine.oncall)."""
        return list(self.session.exec(
            select(Outbox)
            .where(Outbox.account == account, Outbox.status == outbox.Status.PENDING,
                   Outbox.next_attempt_at <= now, Outbox.action != Action.OVERRIDE.value)
            .order_by(col(Outbox.id))
            .limit(limit)
        ))

    def due_counts(self, account: str, now: datetime) -> dict[tuple[str, str | None], int]:
        """How many of :meth:`due`'s rows there are per (action, value): one grouped count,
        so a dispatch that waits for whole batches can look without loading the rows."""
        rows = self.session.exec(
            select(Outbox.action, Outbox.value, func.count())
            .where(Outbox.account == account, Outbox.status == outbox.Status.PENDING,
                   Outbox.next_attempt_at <= now, Outbox.action != Action.OVERRIDE.value)
            .group_by(Outbox.action, Outbox.value)
        )
        return {(action, value): n for action, value, n in rows}

    def next_due_at(self, account: str) -> datetime | None:
        return self.session.exec(
            select(func.min(Outbox.next_attempt_at)).where(
                Outbox.account == account, Outbox.status == outbox.Status.PENDING,
                Outbox.action != Action.OVERRIDE.value)
        ).first()

    def outbox_rows(self, ids: Iterable[int]) -> list[Outbox]:
        ids = list(ids)
        return list(self.session.exec(select(Outbox).where(col(Outbox.id).in_(ids)))) if ids else []

    def outbox_depth(self) -> dict[str, int]:
        rows = self.session.exec(select(Outbox.status, func.count()).group_by(Outbox.status))
        return dict(rows.all())

    def oldest_pending(self) -> datetime | None:
        return self.session.exec(
            select(func.min(Outbox.created_at)).where(Outbox.status == outbox.Status.PENDING)
        ).first()

    def outbox_for_link(self, link_id: int, statuses: Sequence[str] = (
            outbox.Status.PENDING, outbox.Status.PARKED)) -> list[Outbox]:
        return list(self.session.exec(
            select(Outbox).where(Outbox.link_id == link_id, col(Outbox.status).in_(statuses))
            .order_by(col(Outbox.id))
        ))

    def parked(self, limit: int = 50) -> list[Outbox]:
        return list(self.session.exec(
            select(Outbox).where(Outbox.status == outbox.Status.PARKED)
            .order_by(col(Outbox.id).desc()).limit(limit)
        ))

    # ----------------------------------------------------------------- audit

    def audit(self, kind: str, **fields: Any) -> None:
        """Append to the audit log. Entries are written together, one statement per
        transaction (or before the log is read in it), not one per entry."""
        row = dict.fromkeys(_AUDIT_COLUMNS)
        row.update(fields, kind=kind)
        row["at"] = row["at"] or utcnow()
        if row["detail"] is not None:
            # Core writes skip the ORM's redaction hook (tables.py): vendor text is scrubbed here.
            row["detail"] = secrets.redact(row["detail"])
        self._audit.append(row)

    def flush_audit(self) -> None:
        if self._audit:
            rows, self._audit = self._audit, []
            _AUDIT_INSERT(self.core, rows)

    def audit_entries(self, *, limit: int = 100, account: str | None = None,
                      kind: str | None = None, link_id: int | None = None,
                      since: datetime | None = None) -> list[Audit]:
        self.flush_audit()
        query = select(Audit).order_by(col(Audit.id).desc()).limit(limit)
        if account:
            query = query.where(Audit.account == account)
        if kind:
            query = query.where(Audit.kind == kind)
        if link_id is not None:
            query = query.where(Audit.link_id == link_id)
        if since is not None:
            query = query.where(Audit.at >= since)
        return list(self.session.exec(query))

    # ----------------------------------------------------------------- counts for status

    def probe_write(self) -> None:
        """Take the write lock with a no-op update: proves the ledger is writable right now."""
        self.session.execute(text("UPDATE meta SET value = value WHERE key = 'schema_version'"))

    def probe_space(self, size: int | None) -> None:
        """Store ``size`` bytes under a meta key (SQLite), or remove them (``None``)."""
        if size is None:
            self.session.execute(text("DELETE FROM meta WHERE key = 'space_probe'"))
        else:
            self.session.execute(text("INSERT INTO meta (key, value) VALUES ('space_probe', "
                                "zeroblob(:n)) ON CONFLICT (key) DO UPDATE SET value = "
                                "zeroblob(:n)"), {"n": size})

    def counts(self) -> dict[str, int]:
        self.flush_audit()
        def n(model: Any) -> int:
            return int(self.session.exec(select(func.count()).select_from(model)).one())

        return {"records": n(Record), "links": n(Link), "audit": n(Audit)}

    # ----------------------------------------------------------------- on-call

    def record_oncall(self, account: str, entries: Sequence[dict[str, Any]],
                      now: datetime, window: tuple[datetime, datetime] | None = None) -> int:
        """Store entries seen now; an entry seen before only extends its ``last_seen``.

        Vendors cut shifts at the edges of the window asked for (incident.io's schedule entries
        start at ``entry_window_start``), so a shift seen by two polls can differ only at a cut
        edge. With ``window`` given, an entry that starts at the window's start (or ends at its
        end) continues the stored shift of the same person that began earlier (or ended at an
        earlier cut) instead of adding a row per poll; a real change (an override splitting a
        shift) still gives new rows, because its other edge differs.
        """
        new = 0
        for e in entries:
            rows = list(self.session.exec(
                select(OnCallSnapshot).where(
                    OnCallSnapshot.account == account,
                    OnCallSnapshot.schedule_id == e["schedule_id"],
                    OnCallSnapshot.level == e["level"],
                    OnCallSnapshot.user_id == e["user_id"],
                ).order_by(col(OnCallSnapshot.last_seen).desc())
            ))
            row = next((r for r in rows if r.start == e["start"] and r.end == e["end"]), None)
            if row is None and window is not None:
                row = next((r for r in rows if _continues(r, e, window)), None)
                if row is not None and row.end is not None and e["end"] is not None:
                    row.end = max(row.end, e["end"])
            if row is None:
                self.session.add(
                    OnCallSnapshot(account=account, first_seen=now, last_seen=now, **e))
                new += 1
            else:
                row.last_seen = now
                row.user_email = e.get("user_email") or row.user_email
        self.session.flush()
        return new

    def oncall_at(self, account: str, schedule_id: str, level: int, at: datetime
                  ) -> list[OnCallSnapshot]:
        """Entries covering ``at`` from the latest poll that knew about that moment."""
        rows = list(self.session.exec(
            select(OnCallSnapshot).where(
                OnCallSnapshot.account == account,
                OnCallSnapshot.schedule_id == schedule_id,
                OnCallSnapshot.level == level,
                (col(OnCallSnapshot.start).is_(None)) | (OnCallSnapshot.start <= at),
                (col(OnCallSnapshot.end).is_(None)) | (OnCallSnapshot.end > at),
            ).order_by(col(OnCallSnapshot.last_seen).desc())
        ))
        if not rows:
            return []
        latest = rows[0].last_seen
        return [r for r in rows if r.last_seen == latest]


def _continues(row: OnCallSnapshot, e: dict[str, Any], window: tuple[datetime, datetime]) -> bool:
    """``e`` is ``row``'s shift seen again, differing only at edges a window cut: its start
    cut at ``since`` (the row began earlier and still runs then), or its end cut at ``until``
    (the row ended at an earlier cut, after this entry began)."""
    since, until = window
    start, end = e["start"], e["end"]
    start_ok = row.start == start or (
        start == since and row.start is not None and row.start <= since
        and (row.end is None or row.end >= since))
    end_ok = row.end == end or (
        end == until and row.end is not None and start is not None and start < row.end <= until)
    return start_ok and end_ok
