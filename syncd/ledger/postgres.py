"""A PostgreSQL ledger: the engine, its isolation level, and the retry of serialization failures.

SQLite runs one writer at a time (``BEGIN IMMEDIATE``), so every ledger transaction behaves as
if it ran alone. PostgreSQL gives the same guarantee with ``SERIALIZABLE`` isolation: any
interleaving of concurrent transactions (the leader's poll pages and push settlements, a standby
trying to take the lease, ``syncd link`` run by hand on another machine) commits only if it is
equivalent to some serial order; otherwise PostgreSQL aborts one of them with a serialization
failure (SQLSTATE 40001) or a deadlock (40P01). Both guarantee that nothing of the aborted
transaction was written, so :func:`retryable` lets :meth:`~syncd.ledger.Ledger.call` run it
again from the start (a few times, with jitter). Nothing else is retried: after a lost
connection the commit may or may not have happened, and the engine's next round re-reads the
ledger instead (every unit of work is idempotent against what the ledger holds).

READ COMMITTED would be cheaper but the engine reads rows, decides in Python and writes them
back (an agreed value, an outbox row's status): under READ COMMITTED two such transactions could
both read the old value and one update would be lost silently. With a single leader writing,
conflicts are rare, so SERIALIZABLE costs almost nothing here.

The password comes from the URL or from ``[ledger] password`` (a secret reference); either way
it is registered with the log redactor and never part of a message (:func:`safe_url`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from syncd import secrets

ISOLATION = "SERIALIZABLE"
RETRY_SQLSTATES = frozenset({"40001", "40P01"})
"""serialization_failure, deadlock_detected: the transaction was rolled back whole."""
RETRIES = 8
CONNECT_TIMEOUT = 5
"""Seconds to wait for a connection: a ledger that is down must fail a job, not hang it."""
MIGRATION_LOCK = 0x5359_4E43  # "SYNC": replicas starting together migrate one after the other
IDLE_IN_TRANSACTION = 5.0
"""Seconds the server lets a syncd session sit idle inside a transaction before ending it: a
replica paused mid-transaction (SIGSTOP, a long GC) would otherwise keep its row locks, the
lease row's among them, and no standby could take over until the pause ended."""
LEASE_LOCK_TIMEOUT = 1.0
"""Seconds a lease attempt waits for the lease row; the next attempt comes soon anyway."""


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql:", "postgresql+", "postgres:"))


def engine(url: str, password: str | None = None) -> Engine:
    """An engine for ``url`` (``postgresql+psycopg://user@host/db``), ``password`` overriding
    the URL's. psycopg 3 is the driver whatever the URL names."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if password:
        parsed = parsed.set(password=password)
    if parsed.password:
        secrets.register(str(parsed.password))
    return create_engine(
        parsed,
        isolation_level=ISOLATION,
        pool_pre_ping=True,  # a server restart leaves dead connections in the pool
        pool_size=5,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": "syncd",
            "options": "-c idle_in_transaction_session_timeout="
                       f"{int(IDLE_IN_TRANSACTION * 1000)}",
            # A dead peer (a partitioned leader's connection) must not hold row locks for the
            # kernel's default two hours.
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
            "keepalives_count": 3,
        },
    )


def retryable(exc: BaseException) -> bool:
    """A serialization failure or a deadlock: PostgreSQL rolled the transaction back whole."""
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else None
    return getattr(orig, "sqlstate", None) in RETRY_SQLSTATES


def lock_migrations(conn: Connection) -> None:
    """Hold a transaction-scoped advisory lock while checking and migrating the schema, so two
    replicas started together do not both create the tables."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})


def now(conn: Any) -> datetime:
    """The database server's clock (UTC): every replica measures the lease by the same clock."""
    value = conn.execute(text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")).scalar_one()
    return value.replace(tzinfo=UTC)


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and status output."""
    try:
        parsed = make_url(url)
    except Exception:  # not a URL we can parse: show nothing that could be a secret
        return url.split("://", 1)[0] + "://***"
    return parsed.render_as_string(hide_password=True)


def limit_lock_wait(conn: Any, seconds: float) -> None:
    """Give up on a row lock after ``seconds`` in this transaction (SQLSTATE 55P03)."""
    conn.execute(text(f"SET LOCAL lock_timeout = {int(seconds * 1000)}"))
