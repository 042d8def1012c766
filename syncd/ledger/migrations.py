"""Ordered schema scripts. A ledger at version N gets scripts N+1.. applied in one transaction.

Never edit a released script: add a new one. A ledger whose version is newer than the last
script was written by a newer syncd and is refused (downgrading could silently drop state).

The same scripts build a SQLite and a PostgreSQL ledger. They are written in the SQL both
share; :func:`statements` translates the one construct that differs (an ``INTEGER PRIMARY KEY``
is SQLite's rowid alias, numbered by the database; PostgreSQL needs an identity column for that)
and keeps statements marked ``/* postgresql */`` or ``/* sqlite */`` for that database only.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlalchemy import Connection, bindparam, column, select, table, update

MIGRATIONS: list[str] = [
    # 1: incidents, links, agreed values, outbox, audit, cursors.
    """
    CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
    CREATE TABLE account (
        name VARCHAR PRIMARY KEY, vendor VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL
    );
    CREATE TABLE record (
        id INTEGER PRIMARY KEY,
        account VARCHAR NOT NULL,
        external_id VARCHAR NOT NULL,
        title VARCHAR NOT NULL DEFAULT '',
        state VARCHAR NOT NULL,
        severity VARCHAR,
        dedup VARCHAR,
        marker VARCHAR,
        keys_json VARCHAR NOT NULL DEFAULT '{}',
        number VARCHAR,
        url VARCHAR,
        vendor_created_at TIMESTAMP,
        vendor_updated_at TIMESTAMP,
        first_seen_at TIMESTAMP NOT NULL,
        observed_at TIMESTAMP NOT NULL,
        pushed_at TIMESTAMP,
        pushed_vendor_at TIMESTAMP,
        UNIQUE (account, external_id)
    );
    CREATE INDEX ix_record_account_marker ON record (account, marker);
    CREATE TABLE link (
        id INTEGER PRIMARY KEY,
        group_name VARCHAR NOT NULL,
        key VARCHAR,
        origin VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL
    );
    CREATE INDEX ix_link_group_key ON link (group_name, key);
    CREATE TABLE link_member (
        id INTEGER PRIMARY KEY,
        link_id INTEGER NOT NULL REFERENCES link (id),
        record_id INTEGER NOT NULL REFERENCES record (id),
        group_name VARCHAR NOT NULL,
        account VARCHAR NOT NULL,
        UNIQUE (group_name, record_id),
        UNIQUE (link_id, account)
    );
    CREATE INDEX ix_link_member_record ON link_member (record_id);
    CREATE TABLE agreed (
        link_id INTEGER NOT NULL REFERENCES link (id),
        field VARCHAR NOT NULL,
        value VARCHAR,
        source_account VARCHAR,
        changed_at TIMESTAMP NOT NULL,
        PRIMARY KEY (link_id, field)
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        group_name VARCHAR NOT NULL,
        link_id INTEGER NOT NULL REFERENCES link (id),
        record_id INTEGER REFERENCES record (id),
        account VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        value VARCHAR,
        idempotency_key VARCHAR NOT NULL UNIQUE,
        status VARCHAR NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TIMESTAMP NOT NULL,
        last_error VARCHAR,
        cause_account VARCHAR,
        caused_at TIMESTAMP NOT NULL,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    );
    CREATE INDEX ix_outbox_due ON outbox (account, status, next_attempt_at);
    CREATE INDEX ix_outbox_record ON outbox (record_id, status);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TIMESTAMP NOT NULL,
        kind VARCHAR NOT NULL,
        group_name VARCHAR,
        link_id INTEGER,
        account VARCHAR,
        external_id VARCHAR,
        field VARCHAR,
        old VARCHAR,
        new VARCHAR,
        cause VARCHAR,
        outcome VARCHAR,
        detail VARCHAR
    );
    CREATE INDEX ix_audit_at ON audit (at);
    CREATE INDEX ix_audit_link ON audit (link_id);
    CREATE TABLE poll_cursor (
        account VARCHAR PRIMARY KEY,
        cursor VARCHAR,
        last_poll_at TIMESTAMP,
        last_full_at TIMESTAMP,
        last_success_at TIMESTAMP,
        last_error VARCHAR,
        failures INTEGER NOT NULL DEFAULT 0
    );
    """,
    # 2: on-call history, added with cross-vendor schedule mapping.
    """
    CREATE TABLE oncall_snapshot (
        id INTEGER PRIMARY KEY,
        account VARCHAR NOT NULL,
        schedule_id VARCHAR NOT NULL,
        level INTEGER NOT NULL,
        user_id VARCHAR NOT NULL,
        user_email VARCHAR,
        start TIMESTAMP,
        "end" TIMESTAMP,
        schedule_name VARCHAR,
        first_seen TIMESTAMP NOT NULL,
        last_seen TIMESTAMP NOT NULL
    );
    CREATE INDEX ix_oncall_account_schedule ON oncall_snapshot (account, schedule_id, level);
    CREATE INDEX ix_oncall_span ON oncall_snapshot (start, "end");
    """,
    # 3: on-call overrides go through the outbox: a row owes no link (link_id nullable) and
    # keeps what the vendor answered (result: the override's id). SQLite cannot relax NOT NULL
    # in place, so the table is rebuilt with its rows.
    """
    CREATE TABLE outbox_v3 (
        id INTEGER PRIMARY KEY,
        group_name VARCHAR NOT NULL,
        link_id INTEGER REFERENCES link (id),
        record_id INTEGER REFERENCES record (id),
        account VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        value VARCHAR,
        idempotency_key VARCHAR NOT NULL UNIQUE,
        status VARCHAR NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TIMESTAMP NOT NULL,
        last_error VARCHAR,
        result VARCHAR,
        cause_account VARCHAR,
        caused_at TIMESTAMP NOT NULL,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    );
    INSERT INTO outbox_v3 (id, group_name, link_id, record_id, account, action, value,
        idempotency_key, status, attempts, next_attempt_at, last_error, cause_account, caused_at,
        created_at, updated_at)
    SELECT id, group_name, link_id, record_id, account, action, value, idempotency_key, status,
        attempts, next_attempt_at, last_error, cause_account, caused_at, created_at, updated_at
    FROM outbox;
    /* postgresql */ SELECT setval(pg_get_serial_sequence('outbox_v3', 'id'),
        COALESCE(MAX(id), 0) + 1, false) FROM outbox_v3;
    DROP TABLE outbox;
    ALTER TABLE outbox_v3 RENAME TO outbox;
    CREATE INDEX ix_outbox_due ON outbox (account, status, next_attempt_at);
    CREATE INDEX ix_outbox_record ON outbox (record_id, status);
    CREATE INDEX ix_outbox_action ON outbox (action, created_at);
    """,
    # 4: objects syncd migrate created in a target account, keyed by their source object.
    """
    CREATE TABLE migrated (
        id INTEGER PRIMARY KEY,
        source_account VARCHAR NOT NULL,
        target_account VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        source_id VARCHAR NOT NULL,
        target_id VARCHAR,
        marker VARCHAR NOT NULL,
        fingerprint VARCHAR,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL,
        UNIQUE (source_account, target_account, kind, source_id)
    );
    """,
    # 5: lookups a vendor client need not repeat, kept across restarts (incident.io alert
    # dedup keys; value NULL = looked up, the incident has no alert).
    """
    CREATE TABLE known_key (
        account VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        external_id VARCHAR NOT NULL,
        value VARCHAR,
        checked_at TIMESTAMP NOT NULL,
        PRIMARY KEY (account, kind, external_id)
    );
    """,
    # 6: high availability. One row per lease (``leader``): who holds it, until when (the
    # database's clock), and the fencing token every fenced transaction compares with its own.
    """
    CREATE TABLE lease (
        name VARCHAR PRIMARY KEY,
        holder VARCHAR NOT NULL,
        token BIGINT NOT NULL,
        expires_at TIMESTAMP NOT NULL,
        acquired_at TIMESTAMP NOT NULL,
        renewed_at TIMESTAMP NOT NULL
    );
    """,
    # 7: a copy's origin tag (the ``o`` + hex digits ending its creation marker), indexed, so
    # a copy whose marker names another ledger's link id is found by the incident it mirrors,
    # and a mirror link's key is its origin tag (link.key was NULL for mirror links, and stays
    # NULL for those: never adopted into, which is safe, see docs/security.md). The copies
    # already stored get their tag from :func:`fill_tags` (exact, unlike LIKE); the index
    # holds copies only, so it stays small beside a million records.
    """
    ALTER TABLE record ADD COLUMN tag VARCHAR;
    CREATE INDEX ix_record_tag ON record (tag) WHERE tag IS NOT NULL;
    """,
    # 8: a record's newest *own* vendor time (the incident's or alert's, without the times of
    # the incident.io escalations folded into vendor_updated_at), which the step-back check
    # compares with: a lagging listing stamped with a later ack's escalation time is not a
    # reopen. Stored records start from vendor_updated_at, the time that check used before,
    # except incident.io's: theirs can be a newer folded escalation time, which would keep
    # back a severity edit made before the upgrade (observe._behind). They stay NULL until
    # their next observation (every reader takes NULL as unknown); meanwhile the step-back
    # check still compares their folded time. Known limit, for that one listing only: one from
    # a lagging incidents list whose escalations read folds in a newer escalation time is not
    # seen as behind the record, so its older severity is taken (docs/vendors/incidentio.md,
    # "Not done"; an un-ack is not taken: observe._no_unack needs no time).
    """
    ALTER TABLE record ADD COLUMN vendor_own_updated_at TIMESTAMP;
    UPDATE record SET vendor_own_updated_at = vendor_updated_at
        WHERE account NOT IN (SELECT name FROM account WHERE vendor = 'incidentio');
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


DIALECTS = ("sqlite", "postgresql")
_SERIAL_PK = re.compile(r"\bINTEGER PRIMARY KEY\b")
_ONLY = re.compile(r"^/\*\s*(\w+)\s*\*/\s*")


def statements(script: str, dialect: str = "sqlite") -> list[str]:
    """Split a script into the statements ``dialect`` runs (the scripts contain no semicolons
    inside literals)."""
    if dialect not in DIALECTS:
        raise ValueError(f"no migrations for {dialect!r} (supported: {', '.join(DIALECTS)})")
    out = []
    for part in script.split(";"):
        stmt = part.strip()
        only = _ONLY.match(stmt)
        if only is not None:
            if only.group(1) != dialect:
                continue
            stmt = stmt[only.end():]
        if not stmt:
            continue
        if dialect == "postgresql":
            stmt = _SERIAL_PK.sub("INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", stmt)
        out.append(stmt)
    return out


# Script 7's fill is part of a released migration: what it reads and how it derives a tag are
# frozen here, so a later change to the table classes or to the marker shape never changes
# what upgrading an old ledger does.
_RECORD = table("record", column("id"), column("marker"), column("tag"))
_TAG_7 = re.compile(r"syncd-[\w.-]+-\d+-(o(?:[0-9a-f]{16}|[0-9a-f]{8}))")
_MARKED = (select(_RECORD.c.id, _RECORD.c.marker)
           .where(_RECORD.c.id > bindparam("after"), _RECORD.c.marker.is_not(None))
           .order_by(_RECORD.c.id).limit(bindparam("size")))
_SET_TAG = update(_RECORD).where(_RECORD.c.id == bindparam("b_id")).values(tag=bindparam("b_tag"))
FILL_BATCH = 5_000


def fill_tags(conn: Connection) -> None:
    """Script 7's fill: every stored marker's origin tag as the engine derived it when script 7
    was written (:func:`~syncd.model.tag_of`, 16 or 8 hex digits), batch by batch in id order.
    In Python, because SQL patterns cannot say it exactly on both databases (LIKE ignores case
    on SQLite and its ``_`` takes any character)."""
    after = 0
    while rows := conn.execute(_MARKED, {"after": after, "size": FILL_BATCH}).all():
        tags = [{"b_id": i, "b_tag": m.group(1)} for i, marker in rows
                if (m := _TAG_7.fullmatch(marker))]
        if tags:
            conn.execute(_SET_TAG, tags)
        after = rows[-1][0]


FILLS: dict[int, Callable[[Connection], None]] = {7: fill_tags}
"""Data steps run right after a script's statements, in the same transaction."""
