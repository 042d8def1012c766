"""What every vendor client shares: declared from its settings, one constructor, time parsing,
malformed-answer handling and the user directory.

A client's class data (:class:`~syncd.vendors.base.VendorClient`) describes an account with the
default settings. Where a setting changes what the vendor allows (Splunk On-Call's
``rate_limit_table``, incident.io's ``model``), the class answers :meth:`ClientBase.limits_for`
and :meth:`ClientBase.capabilities_for` from the settings alone, so the engine, ``syncd status``
and the demo never build a client just to read them; a built client carries the same values.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypedDict

import anyio
import httpx

from syncd import metrics
from syncd.model import Severity
from syncd.ratelimit import ACCOUNT, Budget, Limit
from syncd.vendors._http import Classifier, VendorHTTP
from syncd.vendors.base import (
    AccountSettings,
    Action,
    Capability,
    KeyCache,
    MalformedResponse,
    MemoryKeyCache,
)

_DIGITS = {"s": 0, "ms": 3, "us": 6}


def parse_time(value: Any) -> datetime:
    """An ISO 8601 timestamp (``Z`` or an offset; naive means UTC) as an aware UTC datetime;
    ValueError for anything else, so a parser can skip the record that carries it."""
    if not isinstance(value, str):
        raise ValueError(f"timestamp is {type(value).__name__}")
    dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def optional_time(value: Any) -> datetime | None:
    """:func:`parse_time`, with None (an absent field) passed through."""
    return None if value is None else parse_time(value)


def stamp(dt: datetime, precision: Literal["s", "ms", "us"] = "s") -> str:
    """``dt`` in UTC as ``YYYY-MM-DDTHH:MM:SS[.fff[fff]]Z``: each vendor's documented form."""
    dt = dt.astimezone(UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    digits = _DIGITS[precision]
    if digits:
        text += "." + f"{dt.microsecond:06d}"[:digits]
    return text + "Z"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ClientOptions(TypedDict, total=False):
    """What every client takes beside its account and settings (see :class:`ClientBase`), so a
    vendor's constructor passes them on with ``**options`` instead of restating them."""

    transport: httpx.AsyncBaseTransport | None
    budget: Budget | None
    backoff_base: float
    sleep: Callable[[float], Awaitable[None]]
    clock: Callable[[], datetime]


class ClientBase:
    """The shared half of a vendor client; the vendor module adds its HTTP calls and parsing.

    Subclasses declare the :class:`~syncd.vendors.base.VendorClient` class data and override
    :meth:`limits_for` / :meth:`capabilities_for` / :meth:`batch_size_for` where settings change
    them, and :meth:`_read_directory` where the vendor has a user directory."""

    vendor: ClassVar[str]
    Settings: ClassVar[type[AccountSettings]]
    capabilities: ClassVar[Capability]
    limits: ClassVar[Mapping[str, Limit]]
    batch_size: ClassVar[Mapping[Action, int]]
    push_size: ClassVar[Mapping[Action, int]] = {}
    """Records per ``push`` call where more than ``batch_size`` (a lookup shared by several
    single-record writes); absent means ``batch_size``."""
    default_severity_map: ClassVar[Mapping[str, Severity]] = {}
    full_read_follows_cursor: ClassVar[bool] = False
    """True: ``poll(cursor, full=True)`` with a cursor lists every open incident *and* what
    changed since the cursor (resolves included) in one read, so the poller's periodic resync
    is that one read; False: a full read lists open incidents only, and the poller follows it
    with a delta read from the cursor (``syncd/engine/poller.py`` ``_reads``)."""
    wants_key_cache: ClassVar[bool] = False
    """True: the client remembers per-record lookups in :attr:`key_cache`, and the engine
    replaces the in-memory one with one kept in the ledger (incident.io's alert dedup keys)."""

    @classmethod
    def limits_for(cls, settings: Any) -> dict[str, Limit]:
        """The documented rate limits of an account with ``settings`` (before
        ``budget_fraction``): what the engine builds the account's budget from."""
        return dict(cls.limits)

    @classmethod
    def capabilities_for(cls, settings: Any) -> Capability:
        """What syncd may do in an account with ``settings``."""
        return cls.capabilities

    @classmethod
    def batch_size_for(cls, settings: Any) -> Mapping[Action, int]:
        """The largest batch per action in an account with ``settings``."""
        return cls.batch_size

    def __init__(
        self,
        account: str,
        settings: Any,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: Budget | None = None,
        backoff_base: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """``budget`` is the account's (the engine scales it); without one the client builds
        it from :meth:`limits_for`. ``transport`` routes every request, e.g. to a simulator."""
        self.account = account
        self.settings = settings
        # Per instance, from the settings; the class data stays the default settings' answer.
        self.limits = self.limits_for(settings)
        self.capabilities = self.capabilities_for(settings)
        self.batch_size = self.batch_size_for(settings)
        self.budget = budget or Budget(self.limits, settings.budget_fraction)
        self.severity_map = {**self.default_severity_map, **settings.severity_map}
        self._transport = transport
        self._backoff_base = backoff_base
        self._sleep = sleep
        self._clock = clock
        self._emails: dict[str, str] = {}  # the user directory, see _directory
        self._directory_loaded = False
        self.key_cache: KeyCache = MemoryKeyCache()

    def _session(self, base_url: str, headers: Mapping[str, str], *,
                 classify: Classifier | None = None, budget: Budget | None = None
                 ) -> VendorHTTP:
        """An HTTP session on one of the vendor's hosts, under this account's settings and
        budget (``budget`` for a host with its own limit, e.g. PagerDuty's Events API)."""
        return VendorHTTP(
            account=self.account, base_url=base_url, headers=headers,
            budget=budget or self.budget, timeout=self.settings.timeout,
            max_retries=self.settings.max_retries, classify=classify,
            bucket_for=self._bucket_for, transport=self._transport,
            backoff_base=self._backoff_base, sleep=self._sleep,
        )

    def _bucket_for(self, endpoint: str) -> str:
        """An endpoint with its own documented limit has its own bucket (besides the
        account's); every other endpoint only takes from the account's."""
        return endpoint if endpoint in self.limits else ACCOUNT

    def severity_lands_as(self, severity: Severity) -> Severity:
        """Exactly ``severity`` where the vendor takes every canonical value or refuses the
        push (see :meth:`~syncd.vendors.base.VendorClient.severity_lands_as`)."""
        return severity

    # ------------------------------------------------------------------ malformed answers

    def _malformed(self, endpoint: str, what: str) -> MalformedResponse:
        """Count an answer we cannot trust and return the error to raise for it."""
        metrics.MALFORMED.labels(self.account, endpoint).inc()
        return MalformedResponse(what, account=self.account, endpoint=endpoint)

    # ------------------------------------------------------------------ user directory

    async def _read_directory(self) -> dict[str, str]:
        """The vendor's whole user directory (user id or name -> email); none by default."""
        return {}

    async def _directory(self, *, refresh: bool = False) -> dict[str, str]:
        """The cached directory, read on first use (or again with ``refresh``). Lookups that
        learn single emails on the way (on-call answers, user searches) add to it."""
        if refresh or not self._directory_loaded:
            self._emails.update(await self._read_directory())
            self._directory_loaded = True
        return self._emails

    async def user_emails(self) -> dict[str, str]:
        """The account's user directory, read once and then cached: the directory on-call
        matching looks people up in, so someone not on call within the horizon is still
        found (and an override can be pushed for them)."""
        return dict(await self._directory())
