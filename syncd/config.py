"""TOML configuration -> validated, immutable objects, with every problem named precisely.

A typo must never be ignored silently, so unknown keys are errors. Every error is one line that
names the file, the line where the key stands (when it can be found), the key path and what is
wrong, and all problems are reported at once (vdirsyncer style), so an operator fixes a config in
one round trip. Account tables are validated by the vendor's own ``Settings`` model (declared on
its client class), so vendor-specific keys are checked where they are defined.

Types are strict (``true`` is not a number), numbers finite and bounded, strings free of control
characters, URLs and emails checked (:mod:`syncd.configtypes`). :func:`preflight` then builds what
``run`` builds (vendor clients, budgets, the ledger engine, the status listen address) without a
network call or a write, so a config that passes ``check-config`` starts.
"""

from __future__ import annotations

import ast
import difflib
import ipaddress
import os
import re
import socket
import tomllib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from syncd import secrets, vendors
from syncd.configtypes import (
    DAY,
    StrictModel,
    bounded,
    check_email,
    check_host,
    check_text,
)
from syncd.model import MARKER_MAX_GROUP
from syncd.secrets import Secret
from syncd.vendors.base import AccountSettings


class ConfigError(Exception):
    """One or more config problems; ``lines`` has one self-contained message per problem."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


_Strict = StrictModel


PATH_MAX, NAME_MAX = 4095, 255  # Linux limits, in bytes


def check_path(value: str) -> str:
    """A file path the OS can open: not too long as a whole or per component."""
    if not value:
        raise ValueError("is empty")
    if len(os.fsencode(value)) > PATH_MAX:
        raise ValueError(f"is longer than {PATH_MAX} bytes")
    if any(len(os.fsencode(part)) > NAME_MAX for part in value.split("/")):
        raise ValueError(f"has a component longer than {NAME_MAX} bytes")
    return value


MIN_LEASE_TTL = 6.0
"""The shortest ``[ledger] lease_ttl``. The leader's renewals start TTL/3 apart, start to start
(at once after one that took longer), and its local deadline for vendor writes is the start of the
last renewal + TTL - margin (10 %, at least 0.5 s), so a renewal must commit within TTL - margin
of the previous renewal's start: 2/3 TTL - margin after its own start. It may first wait up to
max(1 s, TTL/3) for the lease row behind one of the leader's own transactions (up to ~0.7 s).
At 6 s that is 2 s + 0.7 s against 3.4 s: one more 0.7 s transaction to spare (after a
renewal that itself took 2.7 s, the next starts when it ends, 2.7 s before the deadline: just
enough). At 3 s (1 s + 0.7 s against 1.5 s) the deadline lapsed under load and the leader
stopped pushing for a moment."""


class LedgerConfig(_Strict):
    url: str | None = Field(
        None, description="SQLAlchemy URL, e.g. postgresql+psycopg://syncd@db/syncd; default "
        "a SQLite file at `path`")
    path: str = Field("syncd.db", description="SQLite file, relative to the config file")
    busy_timeout: float = bounded(5.0, 0.01, 600, "seconds a writer waits for the SQLite lock")
    password: Secret | None = Field(
        None, description="PostgreSQL password (env:, file:, credential:); overrides the URL's")
    lease_ttl: float = bounded(15.0, 0, 600, "seconds a PostgreSQL leader's lease lasts "
                               f"unrenewed (at least {MIN_LEASE_TTL:g}); a standby takes over "
                               "within this plus about a second")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        secrets.register_url(value)  # its password is redacted everywhere from now on
        try:
            url = make_url(value)
            # What SQLAlchemy (and so the driver) takes for the password is the secret: it
            # reads up to the last "@", so a raw "/" in it is still the password, and libpq
            # also takes one as ?password=.
            for password in (url.password, url.query.get("password")):
                if isinstance(password, str):
                    secrets.register(password)
            url.get_dialect()
        except NoSuchModuleError:  # before ArgumentError, its base class
            raise ValueError("names a database SQLAlchemy does not know") from None
        except (ArgumentError, ValueError):
            raise ValueError("is not a database URL (e.g. sqlite:////var/lib/syncd/syncd.db)"
                             ) from None
        if url.get_backend_name() == "sqlite" and url.database:
            check_path(url.database)
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @field_validator("lease_ttl")
    @classmethod
    def _lease_ttl(cls, value: float) -> float:
        if value < MIN_LEASE_TTL:
            raise ValueError(
                f"is below {MIN_LEASE_TTL:g} s, the shortest lease: a leader renews every "
                "TTL/3, and with a shorter lease a renewal that waits behind one of its own "
                "transactions lands after its local deadline, so it stops pushing for a "
                "moment (docs/ha.md)")
        return value


class StatusConfig(_Strict):
    enabled: bool = True
    listen: str = Field("127.0.0.1:9797", description="host:port of the status server")
    stale_after: float = bounded(
        0, 0, 7 * DAY, "seconds without a poll before /readyz fails (0 = 3 poll intervals)")
    allowed_hosts: list[str] = Field(
        default_factory=list, max_length=64,
        description="names (no port) monitoring and load balancers reach the status server by, "
        "besides IP addresses, localhost, the listen host and the machine's names: a read "
        'naming another Host gets 421 (DNS rebinding; docs/security.md); ["*"] answers any')

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: list[str]) -> list[str]:
        for name in value:
            if name == "*":
                continue
            try:
                check_host(name)
            except ValueError:
                raise ValueError("expected host names or IP addresses without a port, e.g. "
                                 '["syncd.internal"]') from None
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if (not sep or not host or not port.isascii() or not port.isdigit()
                or not 0 < int(port) < 65536):
            raise ValueError("expected host:port, e.g. 127.0.0.1:9797")
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise ValueError("an IPv6 address goes in brackets: [::1]:9797")
        try:
            check_host(host)
        except ValueError as exc:
            raise ValueError(f"expected host:port, e.g. 127.0.0.1:9797 ({exc})") from None
        return value


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


Direction = str  # "both" | "none" | "from:ACCOUNT[,ACCOUNT]"
_DIRECTION = re.compile(r"^(both|none|from:[\w.-]+(,[\w.-]+)*)$")


class SyncFields(_Strict):
    """Which fields sync, and whose changes count: ``both``, ``none`` or ``from:ACCOUNT,...``."""

    state: Direction = "both"
    severity: Direction = "both"

    @field_validator("state", "severity")
    @classmethod
    def _direction(cls, value: str) -> str:
        if not _DIRECTION.fullmatch(value):
            raise ValueError('expected "both", "none" or "from:ACCOUNT[,ACCOUNT...]"')
        return value

    def sources(self, name: str) -> frozenset[str] | None:
        """Accounts whose changes to field ``name`` count (None = all, empty = none)."""
        value = getattr(self, name)
        if value == "both":
            return None
        if value == "none":
            return frozenset()
        return frozenset(value[5:].split(","))


class SyncGroup(_Strict):
    name: str = Field(pattern=r"^[\w.-]+$")
    accounts: list[str] = Field(min_length=2)
    mode: Literal["correlate", "mirror"] = "correlate"
    key: str = Field("dedup", description="correlation key name every account reports")
    key_map: dict[str, str] = Field(
        default_factory=dict, description="per-account override of the key name"
    )
    source: str | None = Field(None, description="mirror mode: the account incidents come from")
    mirror_existing: bool = Field(
        False, description="mirror mode: also mirror incidents already open at first sight"
    )
    fields: SyncFields = SyncFields()
    severity_policy: str = Field("latest", description='"latest", "highest" or "prefer:ACCOUNT"')
    regressions: Literal["ignore", "follow"] = Field(
        "ignore",
        description="a vendor moving an incident backwards by itself (ack timeout, un-ack, "
        "reopen): keep the agreed state (ignore) or propagate where targets can (follow)",
    )

    @field_validator("severity_policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        if value in ("latest", "highest") or re.fullmatch(r"prefer:[\w.-]+", value):
            return value
        raise ValueError('expected "latest", "highest" or "prefer:ACCOUNT"')

    @model_validator(mode="after")
    def _consistent(self) -> SyncGroup:
        if len(set(self.accounts)) != len(self.accounts):
            raise ValueError("accounts lists an account twice")
        if self.mode == "mirror":
            if self.source is None:
                raise ValueError("mirror mode needs source = ACCOUNT")
            if self.source not in self.accounts:
                raise ValueError(f"source {self.source!r} is not one of the group's accounts")
            if len(self.name) > MARKER_MAX_GROUP:
                raise ValueError(f"a mirror group's name has at most {MARKER_MAX_GROUP} "
                                 "characters: it is part of the marker in every copy, which "
                                 "PagerDuty keeps to 255 characters")
        for name in self.key_map:
            if name not in self.accounts:
                raise ValueError(f"key_map names {name!r}, which is not in accounts")
        return self

    def key_for(self, account: str) -> str:
        return self.key_map.get(account, self.key)


class OnCallMember(_Strict):
    account: str
    schedule: str = Field(description="vendor schedule / policy / team id as the vendor names it")
    level: int = Field(1, ge=1, le=10)


class OnCallMapping(_Strict):
    name: str = Field(pattern=r"^[\w.-]+$")
    members: list[OnCallMember] = Field(min_length=2)
    leader: str | None = Field(None, description="account whose schedule is the truth")
    repair: Literal["none", "override"] = "none"
    horizon_days: float = Field(7, ge=0, le=30)

    @model_validator(mode="after")
    def _leader(self) -> OnCallMapping:
        accounts = [m.account for m in self.members]
        if self.repair == "override" and self.leader is None:
            raise ValueError('repair = "override" needs leader = ACCOUNT')
        if self.leader is not None and self.leader not in accounts:
            raise ValueError(f"leader {self.leader!r} is not one of the members' accounts")
        return self


@dataclass(frozen=True)
class Config:
    """The whole validated configuration. ``path`` is where it was read from."""

    path: Path
    ledger: LedgerConfig
    status: StatusConfig
    logging: LoggingConfig
    accounts: Mapping[str, AccountSettings]
    sync: Sequence[SyncGroup]
    oncall: Sequence[OnCallMapping]
    users: Mapping[str, Mapping[str, str]]
    """account -> vendor user id or email (stored as :func:`user_key` makes it) -> email."""
    warnings: Sequence[str] = field(default_factory=tuple)
    text: str = field(default="", repr=False, compare=False)
    """The source, for locating problems :func:`preflight` finds."""

    @property
    def ledger_password(self) -> str | None:
        return self.ledger.password.get_secret_value() if self.ledger.password else None

    @property
    def ledger_url(self) -> str:
        if self.ledger.url:
            return self.ledger.url
        path = Path(self.ledger.path).expanduser()
        if not path.is_absolute():
            path = self.path.parent / path
        return f"sqlite:///{path}"


_TOP_LEVEL = {"ledger", "status", "logging", "accounts", "sync", "oncall", "users"}


def load(path: str | Path) -> Config:
    """Read and validate ``path``; raise ConfigError with every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except (PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read ({type(exc).__name__})"]) from None
    return loads(text, path)


def loads(text: str, path: Path) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_toml_error(path, text, exc)]) from None
    locate = _Locator(text)
    problems: list[str] = []
    warnings: list[str] = []

    def report(loc: Sequence[Any], message: str, *, known: Any = None,
               free: bool = False) -> None:
        """One problem at ``loc``; with ``known`` (the fields of the table holding it), the
        last part of ``loc`` is an unknown key and is named only as :func:`_unknown_key`
        allows; with ``free``, it is a key of the file's own choosing (an account, a vendor
        user) that is not known to be one, named only as :func:`_free_key` allows."""
        shown = [str(p) for p in loc]
        line = locate(loc)
        if known is not None:
            shown[-1], message = _unknown_key(shown[-1], known, locate.exact(loc), message)
        elif free:
            shown[-1] = _free_key(shown[-1], locate.exact(loc))
        key = ".".join(shown) or "(top level)"
        where = f"{path}:{line}" if line else str(path)
        problems.append(f"{where}: {key}: {message}")

    for key in data:
        if key not in _TOP_LEVEL:
            report([key], f"unknown key (expected one of {', '.join(sorted(_TOP_LEVEL))})",
                   known=_TOP_LEVEL)

    def section(model: type[BaseModel], key: str) -> Any:
        raw = data.get(key, {})
        try:
            return model.model_validate(raw, context={"warnings": warnings, "path": [key]})
        except ValidationError as exc:
            _report_validation(exc, [key], report, model)
            return None

    ledger = section(LedgerConfig, "ledger")
    status = section(StatusConfig, "status")
    logging = section(LoggingConfig, "logging")

    accounts: dict[str, AccountSettings] = {}
    raw_accounts = data.get("accounts", {})
    if not isinstance(raw_accounts, dict):
        report(["accounts"], "expected a table of [accounts.NAME] sections")
        raw_accounts = {}
    for name, table in raw_accounts.items():
        loc = ["accounts", name]
        if not re.fullmatch(r"[\w.-]+", name):
            report(loc, "account names may contain letters, digits, '.', '_' and '-' only",
                   free=True)
            continue
        if not isinstance(table, dict):  # not a section: maybe a key pasted under [accounts]
            report(loc, "expected a table", free=True)
            continue
        vendor = table.get("vendor")
        if vendor is None:
            report([*loc, "vendor"], f"missing (one of {', '.join(vendors.VENDORS)})")
            continue
        try:
            settings_model = vendors.load(str(vendor)).Settings
        except ValueError as exc:
            report([*loc, "vendor"], str(exc))
            continue
        try:
            accounts[name] = settings_model.model_validate(
                table, context={"warnings": warnings, "path": loc}
            )
        except ValidationError as exc:
            _report_validation(exc, loc, report, settings_model)
            continue
        weak = _weak_webhook_secret(accounts[name])
        if weak:
            report([*loc, "webhook_secret"], weak)

    groups: list[SyncGroup] = []
    raw_sync = data.get("sync", [])
    if not isinstance(raw_sync, list):
        report(["sync"], "expected [[sync]] array of tables")
        raw_sync = []
    sync_names: set[str] = set()
    for i, table in enumerate(raw_sync):
        try:
            group = SyncGroup.model_validate(table)
        except ValidationError as exc:
            _report_validation(exc, ["sync", i], report, SyncGroup)
            continue
        for j, account in enumerate(group.accounts):
            if account not in raw_accounts:
                report(["sync", i, "accounts", j], f"no [accounts.{account}] section")
        for fname in ("state", "severity"):
            for account in group.fields.sources(fname) or ():
                if account not in group.accounts:
                    report(["sync", i, "fields", fname], f"{account!r} is not in this group")
        if group.severity_policy.startswith("prefer:"):
            preferred = group.severity_policy[7:]
            if preferred not in group.accounts:
                report(["sync", i, "severity_policy"], f"{preferred!r} is not in this group")
        groups.append(group)
        if group.name in sync_names:
            report(["sync", i, "name"], f"another [[sync]] group is named {group.name!r}")
        sync_names.add(group.name)

    mappings: list[OnCallMapping] = []
    raw_oncall = data.get("oncall", [])
    if not isinstance(raw_oncall, list):
        report(["oncall"], "expected [[oncall]] array of tables")
        raw_oncall = []
    oncall_names: set[str] = set()
    for i, table in enumerate(raw_oncall):
        try:
            mapping = OnCallMapping.model_validate(table)
        except ValidationError as exc:
            _report_validation(exc, ["oncall", i], report, OnCallMapping)
            continue
        for j, member in enumerate(mapping.members):
            if member.account not in raw_accounts:
                report(["oncall", i, "members", j, "account"],
                       f"no [accounts.{member.account}] section")
        mappings.append(mapping)
        # Mappings are looked up by name (status, repairs, history): two would collapse.
        if mapping.name in oncall_names:
            report(["oncall", i, "name"], f"another [[oncall]] mapping is named {mapping.name!r}")
        oncall_names.add(mapping.name)

    users: dict[str, dict[str, str]] = {}
    raw_users = data.get("users", {})
    if not isinstance(raw_users, dict):
        report(["users"], "expected a [users.ACCOUNT] table per account")
        raw_users = {}
    for account, table in raw_users.items():
        if account not in raw_accounts:
            report(["users", account], "no [accounts.NAME] section of this name", free=True)
        elif not isinstance(table, dict) or not all(
            isinstance(v, str) for v in table.values()
        ):
            report(["users", account], 'expected a table of "vendor user" = "email" pairs')
        else:
            bad = _bad_users(table)
            if bad:
                report(["users", account, bad[0]], bad[1], free=True)
                continue
            entries: dict[str, str] = {}
            spelled: dict[str, str] = {}  # stored key -> the entry that wrote it first
            for user, email in table.items():
                key = user_key(user)
                if key in spelled:
                    first = (repr(spelled[key]) if secrets.looks_like_name(spelled[key])
                             else "an earlier entry")
                    report(["users", account, user], f"the same email as {first} "
                           "(emails match whatever their case): keep one entry", free=True)
                    continue
                spelled[key] = user
                entries[key] = email
            users[account] = entries

    if problems:
        raise ConfigError(problems)
    assert ledger is not None and status is not None and logging is not None
    return Config(
        path=path,
        ledger=ledger,
        status=status,
        logging=logging,
        accounts=accounts,
        sync=groups,
        oncall=mappings,
        users=users,
        warnings=tuple(f"{path}: {w}" for w in warnings),
        text=text,
    )


def _toml_error(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> str:
    """``file:line: key: invalid TOML: ...`` like every other config error; tomllib only puts
    "(at line N, column M)" at the end of its message, and the key when one stands there.

    A line that fails to parse is often a secret pasted alone (a base64 key ends in ``=``, so
    it reads as ``KEY =``): keys, here and in tomllib's message, are named as far as they are
    schema fields or declared account names (:func:`_shown_path`); the line number says where
    to look either way."""
    found = re.search(r"\(at line (\d+), column \d+\)$", str(exc))
    number = int(found.group(1)) if found else 0
    entries = _Locator(text).entries
    declared = frozenset(key[1] for key, line in entries if len(key) > 1 and line != number
                         and key[0] == "accounts" and secrets.looks_like_name(key[1]))

    def tuple_key(m: re.Match[str]) -> str:
        return _shown_path([str(p) for p in ast.literal_eval(m.group())], declared)

    message = _TOML_KEY.sub(tuple_key, str(exc))  # "Cannot declare ('a', 'b') twice"
    message = re.sub(r"^(Duplicate inline table key) '.*?'( \(at)", r"\1\2", message)
    message = secrets.hide_keylike(message)  # and anything else quoted, by its looks
    if not found:
        return f"{path}: invalid TOML: {message}"
    keys = [key for key, line in entries if line == number]
    where = f"{_shown_path(keys[0], declared)}: " if keys else ""
    return f"{path}:{number}: {where}invalid TOML: {message}"


_TOML_KEY = re.compile(r"\((?:'[^'\\]*'|\"[^\"\\]*\")(?:, (?:'[^'\\]*'|\"[^\"\\]*\"))*,?\)")
"""A key path as tomllib quotes it in a message: a tuple's repr."""


MIN_WEBHOOK_SECRET = 16
"""Characters a webhook secret needs at least (after a Svix ``whsec_`` prefix): the webhook
route is reachable by strangers, and an HMAC with an empty or guessable key authenticates
nothing. The secrets vendors generate are far longer."""


def _weak_webhook_secret(settings: AccountSettings) -> str | None:
    """Why this account's ``webhook_secret`` authenticates nothing, or None when it is fine.
    The message never contains the secret."""
    secret = getattr(settings, "webhook_secret", None)
    if secret is None:
        return None
    value = secret.get_secret_value().removeprefix("whsec_")
    if not value.strip():
        return "is empty: an empty key lets anyone sign deliveries (remove the key to " \
            "disable webhooks)"
    if len(value) < MIN_WEBHOOK_SECRET:
        return (f"is too short ({len(value)} characters; at least {MIN_WEBHOOK_SECRET}): use "
                "the secret the vendor generated for the webhook subscription")
    return None


def user_key(user: str) -> str:
    """How a ``[users.ACCOUNT]`` key is stored and looked up: an email (it holds an ``@``)
    stripped and lower-cased, since emails match whatever their case; a vendor user id as
    written, since ids are case-sensitive."""
    return user.strip().lower() if "@" in user else user


def _bad_users(table: Mapping[str, str]) -> tuple[str, str] | None:
    """The first user entry that is not "vendor user" = "ASCII email", and what is wrong."""
    for user, email in table.items():
        try:
            check_text(user)
            check_text(email)
            check_email(email)
        except ValueError as exc:
            return user, str(exc)
    return None


def preflight(cfg: Config) -> None:
    """Build what ``syncd run`` builds from ``cfg``, without a network call or a write: every
    vendor client (its HTTP sessions and budget), the ledger engine (its driver), the status
    listen address. Raises ConfigError naming what would fail at start."""
    from sqlalchemy import create_engine

    from syncd.ledger import LedgerError
    from syncd.ledger.store import check_sqlite_path

    locate = _Locator(cfg.text)
    problems: list[str] = []

    def report(loc: Sequence[Any], message: str) -> None:
        line = locate(loc)
        where = f"{cfg.path}:{line}" if line else str(cfg.path)
        problems.append(secrets.redact(f"{where}: {'.'.join(map(str, loc))}: {message}"))

    for name, settings in cfg.accounts.items():
        try:
            vendors.load(settings.vendor)(name, settings)
        except Exception as exc:  # anything: check-config must answer in one line
            report(["accounts", name],
                   f"the client cannot be built: {type(exc).__name__}: {exc}")
    key = "url" if cfg.ledger.url else "path"
    try:
        url = cfg.ledger_url
        if url.startswith("sqlite:///"):
            check_path(url[len("sqlite:///"):])
            check_sqlite_path(Path(url[len("sqlite:///"):]))  # what run refuses; writes nothing
        create_engine(url).dispose()  # loads the driver; connects to nothing
    except LedgerError as exc:
        report(["ledger", key], f"the ledger cannot be opened: {exc}")
    except (ValueError, ArgumentError, NoSuchModuleError, ImportError) as exc:
        report(["ledger", key], f"the ledger cannot be opened: {type(exc).__name__}: {exc}")
    if cfg.status.enabled:
        host, _, port = cfg.status.listen.rpartition(":")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass  # a host name: resolving it would be a network call; check_host vetted it
        else:
            try:  # what the bind resolves first; numeric, so no DNS
                socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST)
            except (OSError, UnicodeError) as exc:
                report(["status", "listen"], f"cannot listen there: {exc}")
    if problems:
        raise ConfigError(problems)


def _report_validation(exc: ValidationError, prefix: list[Any], report: Any,
                       model: type[BaseModel]) -> None:
    for err in exc.errors(include_url=False):
        loc = [*prefix, *err["loc"]]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            report(loc, "unknown key", known=_fields(_shapes_at([model], err["loc"][:-1])))
            continue
        if err["type"] == "missing":
            msg = "missing required key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        # pydantic's messages never contain the input value unless we add it; keep it that way
        # so a rejected secret is never echoed.
        report(loc, msg)


# --- naming keys in errors ----------------------------------------------------------------------
# A key that is no setting of its table is often a secret pasted on a line of its own (alone it
# fails to parse; ``KEY = 1`` or a base64 key's ``KEY=`` padding parse as an unknown key), and
# no rule on how a text looks tells a random key from a name every time (PagerDuty's 20
# characters of [A-Za-z0-9_+-] are sometimes all one case). So an unknown or unparsable key is
# named only when it is a schema field of its table, a name the config declares (an account),
# or one typo away from a field (``tem_id``: its near match says what was meant); otherwise the
# error points at the line.

ON_THIS_LINE = "(a key on this line)"
IN_THIS_TABLE = "(a key in this table)"
NEAR_MATCH = 0.8
"""difflib ratio at which an unknown key counts as a typo of a field and is named: ``tem_id``
and ``team_id`` score 0.92, ``pth`` and ``path`` 0.86; a random 20-character key scores below
0.5 against every field name."""


def _unknown_key(key: str, known: Any, exact: bool, message: str) -> tuple[str, str]:
    """How an unknown ``key`` is shown in a path, and its message: by name with the field it
    is a typo of, or as "a key on this line" (in this table, when the line is not its own)."""
    match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=NEAR_MATCH)
    if match and secrets.looks_like_name(key):
        return key, f"{message} (did you mean {match[0]}?)"
    return (ON_THIS_LINE if exact else IN_THIS_TABLE), (
        f"{message} (not named, as it may be a pasted secret)")


def _free_key(key: str, exact: bool) -> str:
    """A key the file chooses itself (an account or vendor user name) where it may instead be
    a pasted secret (``[accounts]`` then ``KEY = 1``): named only if it looks like a name
    (:func:`syncd.secrets.looks_like_name`), else as "a key on this line"."""
    if secrets.looks_like_name(key):
        return key
    return ON_THIS_LINE if exact else IN_THIS_TABLE


def _root() -> Any:
    """The shape of a whole config file, for :func:`_shapes_at`."""
    settings = tuple(vendors.load(name).Settings for name in vendors.VENDORS)
    return {"ledger": LedgerConfig, "status": StatusConfig, "logging": LoggingConfig,
            "accounts": dict[str, Union[settings]],  # type: ignore[valid-type]  # noqa: UP007
            "sync": list[SyncGroup], "oncall": list[OnCallMapping],
            "users": dict[str, dict[str, str]]}


def _shapes_at(shapes: list[Any], loc: Sequence[Any],
               declared: frozenset[str] = frozenset()) -> list[Any]:
    """The types (models, lists, dicts, scalars) a value at ``loc`` under one of ``shapes``
    may have; empty when ``loc`` is not in the schema. A dict's keys count only when in
    ``declared`` (account names); a list's keys are indices."""
    shapes = list(shapes)
    for part in map(str, loc):
        found: list[Any] = []
        while shapes:
            shape = shapes.pop()
            origin = get_origin(shape)
            if origin in (Union, types.UnionType):
                shapes.extend(get_args(shape))
            elif origin is Annotated:
                shapes.append(get_args(shape)[0])
            elif isinstance(shape, dict) and part in shape:
                found.append(shape[part])
            elif isinstance(shape, type) and issubclass(shape, BaseModel):
                if part in shape.model_fields:
                    found.append(shape.model_fields[part].annotation)
            elif origin in (list, Sequence) and part.isdigit():
                found.append(get_args(shape)[0])
            elif origin in (dict, Mapping) and part in declared:
                found.append(get_args(shape)[1])
        shapes = found
    return shapes


def _fields(shapes: list[Any]) -> set[str]:
    """The field names of the tables among ``shapes``."""
    out: set[str] = set()
    for shape in shapes:
        if isinstance(shape, dict):
            out.update(shape)
        elif isinstance(shape, type) and issubclass(shape, BaseModel):
            out.update(shape.model_fields)
        elif get_origin(shape) in (Union, types.UnionType, Annotated):
            out.update(_fields(list(get_args(shape))))
    return out


def _shown_path(key: Sequence[str], declared: frozenset[str]) -> str:
    """``key`` (a path) as far as the schema and ``declared`` names know it, then
    :data:`ON_THIS_LINE` for the rest."""
    for size in range(len(key), 0, -1):
        if _shapes_at([_root()], key[:size], declared):
            rest = [ON_THIS_LINE] if size < len(key) else []
            return ".".join([*key[:size], *rest])
    return ON_THIS_LINE


class _Locator:
    """Finds the line of a key path in TOML source; good enough for error messages.

    tomllib gives no positions, so this follows table headers (``[a.b]``, ``[[a]]`` with their
    array index) and ``key =`` lines. Returns None when it cannot tell.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[\w.-]+)\s*=")

    def __init__(self, text: str) -> None:
        self.entries: list[tuple[tuple[str, ...], int]] = []
        table: tuple[str, ...] = ()
        # Last index of each array of tables, by its path with the indices of the arrays that
        # hold it: TOML appends [[a.b]] to the last [[a]], so b's count restarts in each a.
        last: dict[tuple[str, ...], int] = {}

        def resolve(parts: Sequence[str]) -> tuple[str, ...]:
            path: tuple[str, ...] = ()
            for part in parts:
                path = (*path, part)
                if path in last:
                    path = (*path, str(last[path]))
            return path

        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                parts = _dotted(header.group(2))
                if header.group(1) == "[[":
                    array = (*resolve(parts[:-1]), parts[-1])
                    last[array] = last.get(array, -1) + 1
                    table = (*array, str(last[array]))
                else:
                    table = resolve(parts)
                self.entries.append((table, number))
                continue
            key = self._KEY.match(line)
            if key:
                parts = tuple(_dotted(key.group(1)))
                self.entries.append(((*table, *parts), number))

    def exact(self, loc: Sequence[Any]) -> bool:
        """Whether ``loc`` itself stands on a line (not only a table holding it)."""
        wanted = tuple(str(p) for p in loc)
        return any(path == wanted for path, _ in self.entries)

    def __call__(self, loc: Sequence[Any]) -> int | None:
        wanted = tuple(str(p) for p in loc)
        # The longest prefix of the path that appears in the file is the best place to point;
        # a table declared only by a subtable's header ([a.b.c] without [a.b]) is at the first
        # header under it.
        for size in range(len(wanted), 0, -1):
            for path, number in self.entries:
                if path == wanted[:size]:
                    return number
            for path, number in self.entries:
                if path[:size] == wanted[:size]:
                    return number
        return None


def _dotted(key: str) -> list[str]:
    """The parts of a dotted TOML key; a quoted part may hold dots (``"bob@example.com"``)."""
    return [_unquote(p) for p in re.findall(r"\"[^\"]*\"|'[^']*'|[^.\"'\s]+", key)]


def _unquote(part: str) -> str:
    part = part.strip()
    if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'":
        return part[1:-1]
    return part
