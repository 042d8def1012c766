"""The ledger's tables as SQLModel classes (the shape the queries use).

The DDL itself lives in :mod:`syncd.ledger.migrations` as ordered scripts, so an old ledger can be
upgraded step by step; a test checks that these classes and the migrated schema agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, event
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from syncd import secrets


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite has no time zones, the engine needs them."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)

    def bind_processor(self, dialect: Any) -> Any:
        """On SQLite, one step from aware UTC to the text SQLAlchemy's DATETIME stores
        (``YYYY-MM-DD HH:MM:SS.ffffff``, microseconds always), for the same reason."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        check = self.process_bind_param
        last: tuple[datetime | None, str | None] = (None, None)

        def process(value: datetime | None) -> str | None:
            nonlocal last
            seen, text = last
            if value is seen:  # a page binds the same clock reading into most of its rows
                return text
            if value is not None and value.tzinfo is UTC:
                # Already UTC (the engine's clock, parsed vendor times): the text is the
                # aware ISO form without its "+00:00", one C call instead of three.
                text = value.isoformat(" ", "microseconds")[:-6]
            else:
                naive = check(value, dialect)
                text = None if naive is None else naive.isoformat(" ", "microseconds")
            last = (value, text)
            return text

        return process

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        """On SQLite, one step from the stored text to aware UTC (a poll page reads hundreds
        of these; the generic path costs three Python calls each). SQLAlchemy stores SQLite
        datetimes as ISO text with microseconds, which ``fromisoformat`` reads in C."""
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)

        return process


def ts(optional: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime) if optional else Field(sa_type=UTCDateTime)


class Meta(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str


class Account(SQLModel, table=True):
    __tablename__ = "account"
    name: str = Field(primary_key=True)
    vendor: str
    created_at: datetime = ts()


class Record(SQLModel, table=True):
    """One vendor incident; state/severity are the member's *last known* values."""

    __tablename__ = "record"
    id: int | None = Field(default=None, primary_key=True)
    account: str
    external_id: str
    title: str = ""
    state: str
    severity: str | None = None
    dedup: str | None = None
    marker: str | None = None
    tag: str | None = None  # the origin tag ending ``marker`` (model.tag_of), indexed
    keys_json: str = "{}"
    number: str | None = None
    url: str | None = None
    vendor_created_at: datetime | None = ts(optional=True)
    vendor_updated_at: datetime | None = ts(optional=True)
    # The newest own time of the vendor's incident (model.Incident.own_updated_at), which a
    # step back is judged by; vendor_updated_at may hold a folded escalation's newer time.
    vendor_own_updated_at: datetime | None = ts(optional=True)
    first_seen_at: datetime = ts()
    observed_at: datetime = ts()
    # When a push to this record was last confirmed: our clock, and the vendor's timestamp.
    pushed_at: datetime | None = ts(optional=True)
    pushed_vendor_at: datetime | None = ts(optional=True)


class Link(SQLModel, table=True):
    """The same real incident across a sync group's accounts."""

    __tablename__ = "link"
    id: int | None = Field(default=None, primary_key=True)
    group_name: str
    key: str | None = None  # correlation key; a mirror link's: its source's origin tag
    origin: str  # correlate | mirror | manual
    created_at: datetime = ts()


class LinkMember(SQLModel, table=True):
    __tablename__ = "link_member"
    id: int | None = Field(default=None, primary_key=True)
    link_id: int
    record_id: int
    group_name: str
    account: str


class Agreed(SQLModel, table=True):
    """What every member of a link should have, per field, and who set it."""

    __tablename__ = "agreed"
    link_id: int = Field(primary_key=True)
    field: str = Field(primary_key=True)
    value: str | None = None
    source_account: str | None = None
    changed_at: datetime = ts()


class Outbox(SQLModel, table=True):
    """A write owed to one vendor record (or a create owed to an account, or an on-call
    override owed to a schedule). Statuses: :class:`syncd.ledger.outbox.Status`."""

    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    group_name: str  # the sync group, or the on-call mapping of an override
    link_id: int | None = None  # None for an override
    record_id: int | None = None  # None for a create or an override
    account: str
    action: str
    value: str | None = None
    idempotency_key: str
    status: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime = ts()
    last_error: str | None = None
    result: str | None = None  # what the vendor answered that is worth keeping (override id)
    cause_account: str | None = None
    caused_at: datetime = ts()
    created_at: datetime = ts()
    updated_at: datetime = ts()


class Audit(SQLModel, table=True):
    __tablename__ = "audit"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = ts()
    kind: str  # observed | push | conflict | link | create | park | regression | oncall
    group_name: str | None = None
    link_id: int | None = None
    account: str | None = None
    external_id: str | None = None
    field: str | None = None
    old: str | None = None
    new: str | None = None
    cause: str | None = None
    outcome: str | None = None
    detail: str | None = None


class PollCursor(SQLModel, table=True):
    __tablename__ = "poll_cursor"
    account: str = Field(primary_key=True)
    cursor: str | None = None
    last_poll_at: datetime | None = ts(optional=True)
    last_full_at: datetime | None = ts(optional=True)
    last_success_at: datetime | None = ts(optional=True)
    last_error: str | None = None
    failures: int = 0


class OnCallSnapshot(SQLModel, table=True):
    """Who a vendor had on call, kept as history: one row per distinct entry, with the span of
    polls that saw it, so "who was on call at T" can be answered later."""

    __tablename__ = "oncall_snapshot"
    id: int | None = Field(default=None, primary_key=True)
    account: str
    schedule_id: str
    level: int
    user_id: str
    user_email: str | None = None
    start: datetime | None = ts(optional=True)
    end: datetime | None = ts(optional=True)
    schedule_name: str | None = None
    first_seen: datetime = ts()
    last_seen: datetime = ts()


class Migrated(SQLModel, table=True):
    """One object ``syncd migrate apply`` created in a target account (or is creating: a row
    with no ``target_id`` is an intent written before the create call, so a crash in between
    finds the object by ``marker`` instead of creating it twice)."""

    __tablename__ = "migrated"
    id: int | None = Field(default=None, primary_key=True)
    source_account: str
    target_account: str
    kind: str
    source_id: str
    target_id: str | None = None
    marker: str
    fingerprint: str | None = None
    created_at: datetime = ts()
    updated_at: datetime = ts()


class Lease(SQLModel, table=True):
    """Who may sync now (see :mod:`syncd.ledger.lease`): one row per lease name, with the
    holder, its expiry on the database's clock and the fencing token of the current term."""

    __tablename__ = "lease"
    name: str = Field(primary_key=True)
    holder: str
    token: int
    expires_at: datetime = ts()
    acquired_at: datetime = ts()
    renewed_at: datetime = ts()


_VENDOR_TEXT = {Outbox: ("last_error",), PollCursor: ("last_error",), Audit: ("detail",)}


def _redact_row(mapper: Any, connection: Any, row: Any) -> None:
    for name in _VENDOR_TEXT[type(row)]:
        value = getattr(row, name)
        if value is not None:
            clean = secrets.redact(value)
            if clean != value:
                setattr(row, name, clean)


# Text that can come from a vendor (error bodies, refusal messages) is redacted as it is written,
# whoever writes it: a stored key would reach /status, `syncd status` and backups.
for _table in _VENDOR_TEXT:
    event.listen(_table, "before_insert", _redact_row)
    event.listen(_table, "before_update", _redact_row)
