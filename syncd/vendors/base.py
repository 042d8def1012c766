"""The one interface the engine uses to talk to any paging vendor.

Exceptions are split by what the caller must do, the way httpx splits its own::

    VendorError
    ├── TransientError         retry with backoff (5xx, timeouts, dropped connections)
    │   └── RateLimited        wait ``retry_after`` seconds, then retry
    ├── AuthError              stop this account and tell the operator (401, 403 not rate limit)
    │   └── TLSError           the vendor's certificate failed verification: a config problem,
    │                          not a network blip, so it is handled like rejected credentials
    ├── PermanentError         park the action with its reason (400, 404, 422, invalid transition)
    │   └── NotFound
    └── MalformedResponse      the vendor answered something we cannot parse; log, count, skip

Every error names the account and the endpoint (method + route template), never a credential:
the message is passed through :func:`syncd.secrets.redact` when the error is made and when it is
rendered, so vendor text that echoes a request header (a debugging proxy, a WAF page) loses the
key before it can reach a log, the ledger, ``/status`` or the CLI.

A client declares, as class data (apprise style), its vendor name, its ``Settings`` model, its
``capabilities``, the documented rate ``limits`` and the largest batch per action, and answers
``limits_for(settings)`` / ``capabilities_for(settings)`` where settings change them, so the engine
and ``syncd status`` can reason about a vendor without building or calling it.
:class:`syncd.vendors.client.ClientBase` is the shared half every client builds on.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, ClassVar, Protocol, runtime_checkable

from pydantic import Field, Strict

from syncd import secrets
from syncd.configtypes import DAY, StrictModel, Url, bounded
from syncd.model import (  # noqa: F401  (KeyCache, KnownKey, MemoryKeyCache: clients' API)
    Action,
    Capability,
    Incident,
    KeyCache,
    KnownKey,
    MemoryKeyCache,
    NewIncident,
    OnCall,
    Severity,
)
from syncd.ratelimit import Budget, Limit

# --------------------------------------------------------------------------- errors


class VendorError(Exception):
    """Base of everything a vendor client raises. ``endpoint`` is "METHOD /route/{template}"."""

    def __init__(
        self,
        message: str,
        *,
        account: str = "",
        endpoint: str = "",
        status: int | None = None,
    ) -> None:
        self.message = secrets.redact(message)
        self.account = account
        self.endpoint = endpoint
        self.status = status
        super().__init__(self._render())

    def _render(self) -> str:
        where = " ".join(p for p in (self.account and f"[{self.account}]", self.endpoint) if p)
        code = f" (HTTP {self.status})" if self.status is not None else ""
        text = f"{where}: {self.message}{code}" if where else f"{self.message}{code}"
        return secrets.redact(text)


class TransientError(VendorError):
    """Worth retrying later: the request may not have taken effect."""


class RateLimited(TransientError):
    """The vendor asked us to slow down; ``retry_after`` is its reset signal in seconds."""

    def __init__(self, message: str, *, retry_after: float, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class AuthError(VendorError):
    """Credentials missing, wrong or lacking a permission; retrying will not help."""


class TLSError(AuthError):
    """TLS verification of the vendor failed (untrusted or wrong certificate, wrong host).

    Permanent until the configuration (base_url, trust store) changes: retrying the handshake
    cannot fix it, so polls back off like an authentication failure and /readyz names it."""


class PermanentError(VendorError):
    """The vendor refused this request for good; the action is parked with this reason."""


class NotFound(PermanentError):
    pass


class MalformedResponse(VendorError):
    """A response we cannot trust: bad JSON, missing fields, unknown enums, HTML error pages."""


REFUSALS = (RateLimited, AuthError, PermanentError)
"""Errors that mean the vendor did not act on the request (it answered "no", or it was never
sent: a failed TLS check); any other failure of a write may have landed."""


# --------------------------------------------------------------------------- write counting

_WRITES_LANDED: ContextVar[list[int] | None] = ContextVar("syncd_writes_landed", default=None)


@contextmanager
def counting_writes() -> Iterator[list[int]]:
    """Count, inside the block (this task only), the vendor writes that may have taken effect:
    every write the vendor accepted or answered ambiguously (a 5xx, a timeout), not one it
    refused (a :data:`REFUSALS` answer, or a 2xx its client reads as "nothing made":
    :func:`note_write_refused`) or one never sent (stopped by a write guard, or no connection
    made or free). An operation made of several writes (an override: create, then assign)
    that fails after a counted write may exist in part, so it must not be recorded as refused
    or deferred.
    Every vendor write passes :class:`syncd.vendors._http.VendorHTTP`, which counts."""
    landed = [0]
    reset = _WRITES_LANDED.set(landed)
    try:
        yield landed
    finally:
        _WRITES_LANDED.reset(reset)


def note_write_landed() -> None:
    """One write may have taken effect (see :func:`counting_writes`); a no-op outside it."""
    landed = _WRITES_LANDED.get()
    if landed is not None:
        landed[0] += 1


def note_write_refused() -> None:
    """Take back the write just counted: the vendor accepted it (2xx) but its answer says it
    made nothing (PagerDuty's multi-status override answer with an item of status 400). A
    client calls it right after that write, before any other; a no-op outside
    :func:`counting_writes` or when nothing is counted."""
    landed = _WRITES_LANDED.get()
    if landed is not None and landed[0] > 0:
        landed[0] -= 1


# --------------------------------------------------------------------------- capabilities

# Action and Capability are the engine's vocabulary and live in syncd.model; they are imported
# above and stay importable from here, since every client declares its capabilities and batch
# sizes with them.


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Push:
    """One action for one vendor record. ``idempotency_key`` is stable across retries."""

    external_id: str
    action: Action
    idempotency_key: str
    severity: Severity | None = None


class Outcome(enum.Enum):
    DONE = "done"  # the vendor confirmed the change
    ALREADY = "already"  # the record already had the target value (a no-op, not an error)
    REFUSED = "refused"  # refused for this record only (e.g. cmdAccepted false); park it
    RETRY = "retry"  # this record failed transiently inside an otherwise good batch


@dataclass(frozen=True, slots=True)
class PushResult:
    """Per-record answer to a batch push. ``incident`` is the record as the vendor returned it
    after the write, when the vendor returns it (PagerDuty does), so the ledger can store what
    the vendor confirmed instead of what we asked for."""

    external_id: str
    outcome: Outcome
    message: str = ""
    incident: Incident | None = None


@dataclass(slots=True)
class Skipped:
    """A record in a response that could not be parsed; logged and counted, never fatal."""

    endpoint: str
    reason: str
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class Verified:
    """A webhook delivery whose signature checked out, with the signed id that names it
    (``b""`` where the vendor signs only the body). The webhook intake keys its replay cache on
    this id rather than reading the headers again: only the verifier knows which of a header's
    forms (``webhook-id`` or ``svix-id``, the first of repeated ones) its HMAC covered."""

    delivery_id: bytes = b""


@dataclass(slots=True)
class Page:
    """One page of a poll. The poller commits ``incidents`` and then ``cursor`` atomically, so a
    crash mid-poll resumes from the last committed page. ``cursor`` None = keep the old one."""

    incidents: list[Incident] = field(default_factory=list)
    cursor: str | None = None
    skipped: list[Skipped] = field(default_factory=list)


# --------------------------------------------------------------------------- settings


class AccountSettings(StrictModel):
    """Keys every ``[accounts.NAME]`` table accepts; each vendor subclasses it with its own.

    Strict types (``true`` is not a number, ``1`` is not a string), finite numbers within
    documented bounds, no control characters in any string: what validates here runs."""

    vendor: str
    base_url: Url
    poll_interval: float = bounded(30.0, 0.01, DAY, "seconds between incident polls")
    full_resync_interval: float = bounded(
        600.0, 0.01, 7 * DAY, "seconds between full reads of open incidents")
    oncall_interval: float = bounded(300.0, 0.01, DAY, "seconds between on-call polls")
    budget_fraction: float = bounded(0.5, 0.01, 1, "share of the vendor limit")
    timeout: float = bounded(15.0, 0.1, 300, "HTTP timeout per request, seconds")
    max_retries: int = Field(4, ge=0, le=20)
    severity_map: dict[str, Annotated[Severity, Strict(False)]] = Field(
        default_factory=dict, description="vendor severity value -> sev1..sev5 overrides"
    )


# --------------------------------------------------------------------------- protocol


@runtime_checkable
class VendorClient(Protocol):
    """What every ``syncd/vendors/<vendor>.py`` client implements."""

    vendor: ClassVar[str]
    Settings: ClassVar[type[AccountSettings]]
    capabilities: ClassVar[Capability]
    limits: ClassVar[Mapping[str, Limit]]
    batch_size: ClassVar[Mapping[Action, int]]
    push_size: ClassVar[Mapping[Action, int]]
    default_severity_map: ClassVar[Mapping[str, Severity]]
    full_read_follows_cursor: ClassVar[bool]

    account: str
    budget: Budget

    @classmethod
    def limits_for(cls, settings: Any) -> Mapping[str, Limit]:
        """The documented limits of an account with ``settings``: what its budget is built
        from (they can depend on settings, e.g. Splunk On-Call's ``rate_limit_table``)."""
        ...

    @classmethod
    def capabilities_for(cls, settings: Any) -> Capability:
        """What syncd may do in an account with ``settings`` (incident.io's ``model``); a
        built client's ``capabilities`` is this."""
        ...

    def poll(self, cursor: str | None, *, full: bool = False) -> AsyncIterator[Page]:
        """Changes since ``cursor`` (cheapest mechanism), or every open incident when ``full``
        or when ``cursor`` is None. The last page carries the cursor for the next poll."""
        ...

    async def push(self, action: Action, pushes: Sequence[Push]) -> list[PushResult]:
        """Apply one action to at most ``max(batch_size[action], push_size[action])`` records:
        ``batch_size`` records per vendor write call, ``push_size`` records per ``push`` where
        one lookup serves several writes (incident.io's escalations)."""
        ...

    def severity_lands_as(self, severity: Severity) -> Severity:
        """The canonical severity a record holds after a confirmed push of ``severity``: the
        vendor's closest value where its scale cannot hold ``severity`` exactly (Spike severity
        stops at sev3), so the ledger keeps what the vendor has and the next poll's read-back
        is an echo, not a change that would drift the other members one step."""
        ...

    async def create(self, new: NewIncident) -> Incident:
        """Create an incident carrying ``new.marker`` so :meth:`find_created` finds it again."""
        ...

    async def find_created(self, marker: str) -> Incident | None:
        """The incident created earlier with ``marker``, if any (crash recovery for mirrors)."""
        ...

    async def oncall(self, since: datetime, until: datetime) -> list[OnCall]:
        """Who is on call in ``[since, until)``, per schedule/policy and level."""
        ...

    async def user_emails(self) -> dict[str, str]:
        """The account's user directory (vendor user id or name -> email), for matching people
        across vendors; an empty dict where the vendor offers no directory."""
        ...

    async def create_override(self, schedule_id: str, user_email: str, start: datetime,
                              end: datetime) -> str:
        """Make ``user_email`` the on-call person of ``schedule_id`` in ``[start, end)``;
        PermanentError where the vendor cannot (no Capability.OVERRIDE_WRITE)."""
        ...

    async def aclose(self) -> None: ...

