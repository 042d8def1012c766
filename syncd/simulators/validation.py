"""Request checking shared by every simulator: each operation's body and query, declared in code.

Real vendors validate a request against the operation's schema before acting on it: a
wrong-typed field (an object where a string id belongs, a string where an array belongs) is a
4xx in the vendor's error shape, never a crash and never a half-applied change. The simulators
do the same with one mechanism: every implemented operation declares an :class:`Operation` (a
pydantic model for its JSON body and one for its query string) written from the vendor's spec
and notes (the specs are never read at run time: ../shared is not shipped). The base simulator
runs the check after authentication and before the handler, and each vendor turns the
:class:`Problem` list into its own error body (``Simulator.invalid``).

Rules the models follow:

- Bodies are strict: no coercion (``"5"`` is not an integer, ``5`` is not a string id).
- A body field the simulator does not model is refused as ``not simulated: FIELD`` (extra fields
  are forbidden), so a client never believes an ignored field took effect. Reference objects
  (``{id, type, summary, self, html_url}``) accept their read-only decorations.
- Query strings are parsed the way web frameworks read them (``"true"`` is a boolean, ``"25"``
  an integer); enums and booleans are checked, unknown parameters are ignored like the vendors
  ignore them. ``name[]`` and repeated keys become lists. A parameter the vendor documents for
  the operation but the simulator does not apply is declared ``Unmodelled`` and refused.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from syncd.simulators.base import parse_time

NOT_SIMULATED = "not simulated"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a request. ``kind`` is json, missing, type, value or not_simulated;
    ``field`` is the dotted path (``incident.priority.id``), empty for the whole body."""

    field: str
    message: str
    kind: str


class Body(BaseModel):
    """A JSON body (or an object inside one): strict types, unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Ref(Body):
    """A reference object (``{id, type}``): its read-only decorations, which clients echo back
    from earlier answers, are accepted; anything else is refused like in any body."""

    summary: str | None = None
    self_: str | None = Field(None, alias="self")
    html_url: str | None = None


class Query(BaseModel):
    """A query string: lax parsing from text, unknown parameters ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _time(value: str) -> str:
    try:
        parse_time(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time") from None
    return value


DateTime = Annotated[str, AfterValidator(_time)]
"""A string that must parse as an ISO 8601 date or date-time (kept as text for the handler)."""


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not a time zone") from None
    return value


def _utc_zone(value: str) -> str:
    zone = ZoneInfo(_zone(value))
    if any(zone.utcoffset(datetime(2024, m, 1)) != timedelta(0) for m in (1, 7)):
        raise ValueError(f"not simulated: time_zone {value} (the simulator renders UTC)")
    return value


TimeZone = Annotated[str, AfterValidator(_zone)]
"""An IANA zone name, for bodies whose times carry their own offsets (the zone only labels)."""

UtcZone = Annotated[str, AfterValidator(_utc_zone)]
"""A zone that renders as UTC: the simulators render UTC only, so asking for another zone's
rendering would silently change nothing; it is refused as not simulated instead."""


def _nonempty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


Text = Annotated[str, AfterValidator(_nonempty)]
"""A required non-empty string."""


def _unmodelled(value: Any) -> Any:
    if value:
        raise ValueError(f"{NOT_SIMULATED} (the vendor documents this parameter; the simulator "
                         "does not apply it)")
    return value


Unmodelled = Annotated[str | None, AfterValidator(_unmodelled)]
"""A query parameter the vendor documents but the simulator does not apply: refused when given,
so a client never reads an unfiltered answer as a filtered one."""

UnmodelledList = Annotated[list[str], AfterValidator(_unmodelled)]
"""The same for a repeated ``name[]`` parameter."""


class Intake(BaseModel):
    """An alert intake's body (webhook, REST endpoint): documented fields typed strictly, any
    other field kept, as these intakes store whatever the monitoring tool sends."""

    model_config = ConfigDict(strict=True, extra="allow")


@dataclass(frozen=True, slots=True)
class Operation:
    """What one operation accepts. ``body_required``: a missing or empty body is a problem.
    ``answer``: the refusal of an intake whose failures look unlike the vendor's API errors
    (None: the simulator's ``invalid``)."""

    body: type[BaseModel] | None = None
    query: type[Query] | None = None
    body_required: bool = True
    answer: Callable[[list[Problem]], Response] | None = None

    def check(self, query: Any, raw: bytes | None) -> list[Problem]:
        problems: list[Problem] = []
        if self.query is not None:
            problems += check_query(self.query, query)
        if self.body is not None and raw is not None and (raw.strip() or self.body_required):
            problems += check_body(self.body, raw)
        return problems


def check_body(model: type[BaseModel], raw: bytes) -> list[Problem]:
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        return [Problem("", "Request body is not valid JSON", "json")]
    if not isinstance(data, dict):
        return [Problem("", "Request body must be a JSON object", "json")]
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return _problems(exc)
    return []


def check_query(model: type[Query], params: Any) -> list[Problem]:
    """``params`` is a Starlette QueryParams (or any multi-dict with ``multi_items``)."""
    lists = {name for name, f in model.model_fields.items() if _is_list(f.annotation)}
    aliases = {f.alias or name: name for name, f in model.model_fields.items()}
    data: dict[str, Any] = {}
    for key, value in params.multi_items():
        name = key[:-2] if key.endswith("[]") else key
        name = aliases.get(name, name)
        if name in lists:
            data.setdefault(name, []).append(value)
        else:
            data[name] = value
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return _problems(exc)
    return []


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, Sequence):
        return True
    return any(_is_list(a) for a in typing.get_args(annotation)) if origin else False


def _problems(exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
        kind = err["type"]
        if kind == "extra_forbidden":
            out.append(Problem(path, f"{NOT_SIMULATED}: {path}", "not_simulated"))
        elif kind == "missing":
            out.append(Problem(path, f"{path} is required", "missing"))
        elif kind == "value_error" and _message(err).startswith(NOT_SIMULATED):
            out.append(Problem(path, f"{path}: {_message(err)}", "not_simulated"))
        elif kind in ("literal_error", "enum", "value_error", "greater_than_equal",
                      "less_than_equal", "too_short", "too_long", "greater_than",
                      "less_than", "string_too_short", "string_too_long"):
            out.append(Problem(path, f"{path}: {_message(err)}", "value"))
        else:
            out.append(Problem(path, f"{path}: {_message(err)}", "type"))
    # One message per field: a union reports each alternative; the first says enough.
    seen: set[str] = set()
    unique = []
    for p in out:
        if p.field not in seen:
            seen.add(p.field)
            unique.append(p)
    return unique


def _is_union_tag(part: Any) -> bool:
    # pydantic names union members in the location ("str", "PriorityRef", "list[str]",
    # "function-after[...]"); they are not part of the field path.
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part in (
        "str", "int", "float", "bool", "dict", "list", "none"))


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")
