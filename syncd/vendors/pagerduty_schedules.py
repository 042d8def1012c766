"""PagerDuty schedules and escalation policies as a migration source and target.

:class:`PagerDutySchedules` is the half of :class:`~syncd.vendors.pagerduty.PagerDutyClient` that
implements :class:`syncd.migrate.api.ScheduleTarget`; vendor JSON stays here. Facts are from
../shared/vendor-notes/pagerduty.md §5.9-5.10, migration.md §1.7, §4 and the REST spec
(docs/vendors/pagerduty.md "Schedules and escalation policies" has the full account):

- A schedule is read with ``GET /schedules/{id}?time_zone=<the schedule's own zone>``:
  restrictions "respect the time_zone parameter of the request", so a read in any other zone
  (Grafana's migrator reads UTC) shifts every restriction by the season's offset.
- ``GET /schedules/{id}`` lists layers highest precedence first, the reverse of what POST/PUT
  take (public-support-scripts ``schedule_layer_reorganizer``; Grafana's migrator); the model
  keeps them lowest first, as POST/PUT do.
- Layers are never removed (Salto's PagerDuty adapter): an update keeps every layer id it can,
  pairs the live layers with the new rotations in order, and ends the ones left over now.
- The final schedule is ``final_schedule.rendered_schedule_entries`` of the per-schedule GET (the
  list omits it, PagerDuty/api-schema#430); ``POST /schedules/preview`` renders a definition
  without saving it.
- Overrides: ``GET``/``POST /schedules/{id}/overrides``; the last created wins.
- ``query`` on the lists matches names only (spec ``query``), so ``find_*`` reads the whole list
  and looks for the marker in each description.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

from syncd.migrate import ModelOf
from syncd.vendors._http import require
from syncd.vendors.base import MalformedResponse, NotFound, PermanentError
from syncd.vendors.client import optional_time, parse_time
from syncd.vendors.client import stamp as _stamp

if TYPE_CHECKING:
    from syncd.migrate.convert import TargetModel
    from syncd.migrate.policy import Policy
    from syncd.migrate.schedule import Override, Rotation, Schedule, Span, Window
    from syncd.vendors._http import VendorHTTP

OVERRIDE_HORIZON = timedelta(days=366)  # how far ahead future overrides are read
DAY = timedelta(days=1)
USER_TYPES = ("user_reference", "user")
SCHEDULE_TYPES = ("schedule_reference", "schedule", "schedule_v3_reference")
# Rules say their assignment strategy (round robin or everyone) when asked for it: the
# include[] of GET /escalation_policies and /{id} (rest-openapiv3.json include_escalation_policy).
STRATEGIES = {"include[]": ["escalation_rule_assignment_strategies"]}


def description_for(marker: str) -> str:
    """The description every object syncd creates carries, so it is found again by marker."""
    return f"Migrated by syncd. marker: {marker}"


class PagerDutySchedules:
    """ScheduleSource and ScheduleTarget over PagerDuty's REST API v2 (mixed into the client,
    which supplies the session, budget, pagination and malformed-answer handling)."""

    schedule_model: ClassVar[TargetModel] = ModelOf("PAGERDUTY")  # type: ignore[assignment]

    if TYPE_CHECKING:
        account: str
        settings: Any
        http: VendorHTTP
        _clock: Callable[[], datetime]

        async def _get(self, route: str, params: Any = None, **path: Any) -> dict[str, Any]: ...

        def _pages(self, route: str, key: str, params: dict[str, Any], *, start: int = 0
                   ) -> AsyncIterator[tuple[list[Any], dict[str, Any]]]: ...

        def _malformed(self, endpoint: str, what: str) -> MalformedResponse: ...

    # ------------------------------------------------------------------ reading schedules

    async def _listed(self, route: str, key: str, teams: Sequence[str] | None,
                      extra: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Every object of a list endpoint by id, paged to the end."""
        params: dict[str, Any] = {"team_ids[]": list(teams)} if teams else {}
        params.update(extra or {})
        found: dict[str, dict[str, Any]] = {}
        async for items, _env in self._pages(route, key, params):
            for raw in items:
                if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
                    raise self._malformed(f"GET {route}", f"a {key[:-1]} without an id")
                found[raw["id"]] = raw
        return found

    async def _schedule(self, schedule_id: str, zone: str, *, since: datetime | None = None,
                        until: datetime | None = None) -> dict[str, Any]:
        """``GET /schedules/{id}`` in ``zone``; asked again in the schedule's own zone if it
        turns out to be another one (restrictions follow the request's zone)."""
        endpoint = "GET /schedules/{id}"
        params: dict[str, Any] = {"time_zone": zone}
        if since is not None and until is not None:
            params.update(since=_stamp(since), until=_stamp(until))
        for _attempt in range(2):
            body = await self._get("/schedules/{id}", params, id=schedule_id)
            raw = require(body, "schedule", dict, endpoint=endpoint, account=self.account)
            own = raw.get("time_zone")
            if not isinstance(own, str):
                raise self._malformed(endpoint, f"schedule {schedule_id} has no time_zone")
            if own == params["time_zone"]:
                return raw
            params["time_zone"] = own
        raise self._malformed(endpoint, f"schedule {schedule_id} keeps changing time zone")

    async def read_schedules(self, ids: Sequence[str] | None = None,
                             teams: Sequence[str] | None = None) -> list[Schedule]:
        """Definitions in each schedule's own zone, layers lowest precedence first, with the
        overrides that have not ended yet (in the order PagerDuty lists them)."""
        listed = await self._listed("/schedules", "schedules", teams)
        out = []
        now = self._clock()
        for sid in (list(ids) if ids is not None else list(listed)):
            item = listed.get(sid)
            if item is None:
                raise NotFound(f"no PagerDuty schedule {sid}" + (" in those teams" if teams
                                                                  else ""),
                               account=self.account, endpoint="GET /schedules")
            zone = item.get("time_zone")
            if not isinstance(zone, str):
                raise self._malformed("GET /schedules", f"schedule {sid} has no time_zone")
            raw = await self._schedule(sid, zone)
            overrides = await self._overrides(sid, now, now + OVERRIDE_HORIZON)
            out.append(self._parse_schedule(raw, overrides))
        return out

    def _parse_schedule(self, raw: dict[str, Any], overrides: list[Override]) -> Schedule:
        from syncd.migrate.schedule import Schedule

        endpoint = "GET /schedules/{id}"
        sid = raw.get("id")
        try:
            zone = raw["time_zone"]
            ZoneInfo(zone)
            layers = raw["schedule_layers"]
            if not isinstance(layers, list):
                raise TypeError("schedule_layers is not a list")
            rotations = tuple(_rotation(layer) for layer in reversed(layers))
            teams = raw.get("teams") or []
            team = teams[0]["id"] if teams and isinstance(teams[0], dict) else None
            return Schedule(id=str(sid), name=str(raw.get("name") or sid), time_zone=zone,
                            rotations=rotations, precedence=True, overrides=tuple(overrides),
                            team=team if isinstance(team, str) else None)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise self._malformed(endpoint, f"schedule {sid}: {exc}") from None

    async def _overrides(self, schedule_id: str, since: datetime, until: datetime
                         ) -> list[Override]:
        from syncd.migrate.schedule import Override

        endpoint = "GET /schedules/{id}/overrides"
        body = await self._get("/schedules/{id}/overrides",
                               {"since": _stamp(since), "until": _stamp(until)}, id=schedule_id)
        items = require(body, "overrides", list, endpoint=endpoint, account=self.account)
        out = []
        for raw in items:
            try:
                out.append(Override(parse_time(raw["start"]), parse_time(raw["end"]),
                                    _ref_id(raw["user"]), id=raw.get("id")))
            except (KeyError, TypeError, ValueError) as exc:
                raise self._malformed(endpoint, f"override on {schedule_id}: {exc}") from None
        return out

    async def rendered(self, schedule_id: str, since: datetime, until: datetime) -> list[Span]:
        """PagerDuty's own final schedule (layers, then overrides) over [since, until), as
        maximal spans covering the whole range (nobody = an empty span)."""
        body = await self._get("/schedules/{id}", _range(since, until), id=schedule_id)
        raw = require(body, "schedule", dict, endpoint="GET /schedules/{id}",
                      account=self.account)
        return self._final(raw, since, until, "GET /schedules/{id}")

    def _final(self, raw: dict[str, Any], since: datetime, until: datetime,
               endpoint: str) -> list[Span]:
        final = raw.get("final_schedule")
        entries = final.get("rendered_schedule_entries") if isinstance(final, dict) else None
        if not isinstance(entries, list):
            raise self._malformed(endpoint, "final_schedule has no rendered_schedule_entries")
        try:
            parsed = sorted((parse_time(e["start"]), parse_time(e["end"]), _ref_id(e["user"]))
                            for e in entries)
        except (KeyError, TypeError, ValueError) as exc:
            raise self._malformed(endpoint, f"final schedule entry: {exc}") from None
        try:
            return cover(parsed, since, until)
        except ValueError as exc:
            raise self._malformed(endpoint, str(exc)) from None

    async def preview(self, schedule: Schedule, since: datetime, until: datetime
                      ) -> list[Span] | None:
        """``POST /schedules/preview`` renders the layers; the schedule's overrides are laid on
        top the way PagerDuty applies them once :meth:`sync_overrides` has written them (a
        preview body has no overrides): each replaces the whole schedule's person, the last
        one winning (notes §5.9)."""
        endpoint = "POST /schedules/preview"
        body = await self.http.json(
            "POST", "/schedules/preview", idempotent=True,
            params=_range(since, until), json={"schedule": self._schedule_body(schedule, "", None)})
        raw = require(body, "schedule", dict, endpoint=endpoint, account=self.account)
        return with_overrides(self._final(raw, since, until, endpoint), schedule.overrides)

    # ------------------------------------------------------------------ writing schedules

    def _schedule_body(self, schedule: Schedule, description: str,
                       existing: list[dict[str, Any]] | None) -> dict[str, Any]:
        """The POST/PUT body: layers lowest precedence first. ``existing`` (an update) are the
        schedule's current layers, lowest first: live ones keep their ids in order, the rest
        are sent back unchanged or ended now, since PagerDuty never removes a layer."""
        endpoint = "PUT /schedules/{id}" if existing is not None else "POST /schedules"
        if not schedule.precedence and len(schedule.rotations) > 1:
            raise PermanentError(f"schedule {schedule.name!r} pages several people at once; "
                                 "a PagerDuty schedule pages one", account=self.account,
                                 endpoint=endpoint)
        zone = ZoneInfo(schedule.time_zone)
        now = self._clock()
        existing = existing or []
        live = [x for x in existing if optional_time(x.get("end")) is None
                or optional_time(x.get("end")) > now]  # type: ignore[operator]
        layers = [_stripped(x) for x in existing if x not in live]
        layers += [{**_stripped(x), "end": _stamp(now)} for x in live[len(schedule.rotations):]]
        for n, rot in enumerate(schedule.rotations):
            old = live[n] if n < len(live) else None
            layers.append(self._layer_body(rot, zone, now, old, endpoint))
        return {"type": "schedule", "name": schedule.name, "time_zone": schedule.time_zone,
                "description": description, "schedule_layers": layers}

    def _layer_body(self, rot: Rotation, zone: ZoneInfo, now: datetime,
                    old: dict[str, Any] | None, endpoint: str) -> dict[str, Any]:
        def refuse(why: str) -> PermanentError:
            return PermanentError(f"rotation {rot.name!r}: {why}", account=self.account,
                                  endpoint=endpoint)
        if len(set(rot.handovers)) != 1:
            raise refuse("PagerDuty layers have one turn length")
        if None in rot.users:
            raise refuse("PagerDuty layers have no 'nobody' place")
        turn = rot.handovers[0]
        if turn % timedelta(seconds=1):
            raise refuse(f"turn {turn} is not a whole number of seconds")
        # A start in the past is only a phase: keep the layer's own start on an update (its
        # history stays), else start at the anchor or now, whichever is earlier (Salto sets
        # start = rotation_virtual_start).
        if rot.start is not None:
            start = rot.start
        elif old is not None and isinstance(old.get("start"), str):
            start = parse_time(old["start"])
        else:
            start = min(rot.anchor, now)
        body: dict[str, Any] = {
            "name": rot.name, "start": _local(start, zone),
            "end": _local(rot.end, zone) if rot.end is not None else None,
            "rotation_virtual_start": _local(rot.anchor, zone),
            "rotation_turn_length_seconds": int(turn.total_seconds()),
            "users": [{"user": {"id": u, "type": "user_reference"}} for u in rot.users],
            "restrictions": [_restriction(w) for w in rot.windows]}
        if old is not None:
            body["id"] = old["id"]
        return body

    async def find_schedule(self, marker: str) -> str | None:
        return _by_marker(await self._listed("/schedules", "schedules", None), marker)

    async def create_schedule(self, schedule: Schedule, marker: str) -> str:
        endpoint = "POST /schedules"
        body = await self.http.json("POST", "/schedules", json={
            "schedule": self._schedule_body(schedule, description_for(marker), None)})
        raw = require(body, "schedule", dict, endpoint=endpoint, account=self.account)
        if not isinstance(raw.get("id"), str):
            raise self._malformed(endpoint, "created schedule has no id")
        return raw["id"]

    async def update_schedule(self, target_id: str, schedule: Schedule, marker: str) -> None:
        endpoint = "PUT /schedules/{id}"
        # Layers sent back unchanged are read in the zone they will be written in.
        current = require(await self._get("/schedules/{id}", {"time_zone": schedule.time_zone},
                                          id=target_id),
                          "schedule", dict, endpoint="GET /schedules/{id}", account=self.account)
        layers = current.get("schedule_layers")
        if not isinstance(layers, list) or not all(isinstance(x, dict) and isinstance(
                x.get("id"), str) for x in layers):
            raise self._malformed("GET /schedules/{id}", f"schedule {target_id}: bad layers")
        body = await self.http.json("PUT", "/schedules/{id}", path={"id": target_id}, json={
            "schedule": self._schedule_body(schedule, description_for(marker),
                                            list(reversed(layers)))})
        raw = require(body, "schedule", dict, endpoint=endpoint, account=self.account)
        if raw.get("id") != target_id:
            raise self._malformed(endpoint, f"updated schedule answered as {raw.get('id')!r}")

    async def sync_overrides(self, target_id: str, overrides: Sequence[Override]) -> int:
        """Create the overrides that have not ended and are not there yet (same start, end and
        person), in the given order so the last still wins; returns how many were created."""
        endpoint = "POST /schedules/{id}/overrides"
        now = self._clock()
        wanted = [o for o in overrides if o.end > now]
        if not wanted:
            return 0
        since = min(now, *(o.start for o in wanted))
        until = max(o.end for o in wanted) + timedelta(seconds=1)
        present = {(o.start, o.end, o.user) for o in await self._overrides(target_id, since,
                                                                             until)}
        missing = []
        for o in wanted:
            key = (o.start, o.end, o.user)
            if key not in present:
                present.add(key)
                missing.append(o)
        if not missing:
            return 0
        body = await self.http.json("POST", "/schedules/{id}/overrides", path={"id": target_id},
                                    json={"overrides": [{
                                        "start": _stamp(o.start), "end": _stamp(o.end),
                                        "user": {"id": o.user, "type": "user_reference"},
                                        "time_zone": "UTC"} for o in missing]})
        if not isinstance(body, list) or len(body) != len(missing):
            raise self._malformed(endpoint, "expected one result per override")
        refused = [item.get("errors") for item in body
                   if not isinstance(item, dict) or item.get("status") != 201]
        if refused:
            raise PermanentError(f"{len(refused)} of {len(missing)} overrides refused: "
                                 f"{refused!r}"[:300], account=self.account, endpoint=endpoint)
        return len(missing)

    # ------------------------------------------------------------------ escalation policies

    async def read_policies(self, ids: Sequence[str] | None = None,
                            teams: Sequence[str] | None = None) -> list[Policy]:
        """Levels in order with their delays, ``repeats`` = ``num_loops``."""
        endpoint = "GET /escalation_policies/{id}"
        if ids is None:
            raws = list((await self._listed("/escalation_policies", "escalation_policies",
                                            teams, STRATEGIES)).values())
        else:
            raws = []
            for pid in ids:
                body = await self._get("/escalation_policies/{id}", STRATEGIES, id=pid)
                raws.append(require(body, "escalation_policy", dict, endpoint=endpoint,
                                    account=self.account))
            if teams:
                raws = [r for r in raws if {t.get("id") for t in r.get("teams") or []
                                            if isinstance(t, dict)} & set(teams)]
        out = []
        for raw in raws:
            try:
                out.append(_policy(raw))
            except (KeyError, TypeError, ValueError) as exc:
                raise self._malformed(endpoint, f"escalation policy {raw.get('id')}: {exc}") \
                    from None
        return out

    def _policy_body(self, policy: Policy, marker: str, endpoint: str,
                     assigned_now: frozenset[int] = frozenset()) -> dict[str, Any]:
        """``assigned_now``: the levels (1-based) the target policy assigns by a strategy
        other than PagerDuty's default (everyone) now: round robin, or one syncd does not
        know. Round robin exists only on some PagerDuty plans (support.pagerduty.com/docs/
        round-robin-scheduling) and how an account without it treats the field is not
        documented, so it is sent only where it matters: ``round_robin`` on a round-robin
        level, ``assign_to_everyone`` only to turn a target rule's strategy off."""
        from syncd.migrate.policy import PAGERDUTY_MAX_LOOPS

        def refuse(why: str) -> PermanentError:
            return PermanentError(f"escalation policy {policy.name!r}: {why}",
                                  account=self.account, endpoint=endpoint)
        if not 0 <= policy.repeats <= PAGERDUTY_MAX_LOOPS:
            raise refuse(f"repeats {policy.repeats} outside 0..{PAGERDUTY_MAX_LOOPS}")
        rules = []
        for n, level in enumerate(policy.levels, 1):
            if level.conditional:
                raise refuse(f"level {n} is conditional")
            if level.delay % timedelta(minutes=1):
                raise refuse(f"level {n} delay {level.delay} is not whole minutes")
            if level.rotate_after is not None:
                raise refuse(f"level {n} rotates round robin after {level.rotate_after}")
            rule: dict[str, Any] = {
                "escalation_delay_in_minutes": int(level.delay.total_seconds() // 60),
                "targets": [{"id": t.id, "type": f"{t.kind}_reference"} for t in level.targets]}
            if level.round_robin or n in assigned_now:
                rule["escalation_rule_assignment_strategy"] = (
                    "round_robin" if level.round_robin else "assign_to_everyone")
            rules.append(rule)
        return {"escalation_policy": {
            "type": "escalation_policy", "name": policy.name,
            "description": description_for(marker), "num_loops": policy.repeats,
            "escalation_rules": rules}}

    async def find_policy(self, marker: str) -> str | None:
        return _by_marker(await self._listed("/escalation_policies", "escalation_policies",
                                             None), marker)

    async def create_policy(self, policy: Policy, marker: str) -> str:
        endpoint = "POST /escalation_policies"
        body = await self.http.json("POST", "/escalation_policies",
                                    headers={"From": self.settings.from_email},
                                    json=self._policy_body(policy, marker, endpoint))
        raw = require(body, "escalation_policy", dict, endpoint=endpoint, account=self.account)
        if not isinstance(raw.get("id"), str):
            raise self._malformed(endpoint, "created escalation policy has no id")
        return raw["id"]

    async def update_policy(self, target_id: str, policy: Policy, marker: str) -> None:
        endpoint = "PUT /escalation_policies/{id}"
        current = require(await self._get("/escalation_policies/{id}", STRATEGIES,
                                          id=target_id), "escalation_policy", dict,
                          endpoint="GET /escalation_policies/{id}", account=self.account)
        rules = current.get("escalation_rules")
        assigned_now = frozenset(n for n, rule in enumerate(
            rules if isinstance(rules, list) else [], 1)
            if isinstance(rule, dict) and _assigned(rule))
        body = await self.http.json("PUT", "/escalation_policies/{id}", path={"id": target_id},
                                    json=self._policy_body(policy, marker, endpoint,
                                                           assigned_now))
        raw = require(body, "escalation_policy", dict, endpoint=endpoint, account=self.account)
        if raw.get("id") != target_id:
            raise self._malformed(endpoint, f"updated policy answered as {raw.get('id')!r}")


# ---------------------------------------------------------------------------------------------
# JSON <-> model, pure
# ---------------------------------------------------------------------------------------------


def _range(since: datetime, until: datetime) -> dict[str, str]:
    """since/until widened to whole seconds (PagerDuty's precision), so entries cover the
    range asked for; :func:`cover` clips them back."""
    whole = until.replace(microsecond=0)
    return {"since": _stamp(since), "until": _stamp(whole if whole == until
                                                    else whole + timedelta(seconds=1))}


def _ref_id(ref: Any) -> str:
    if not isinstance(ref, dict) or not isinstance(ref.get("id"), str):
        raise ValueError("reference without an id")
    return ref["id"]


def _rotation(raw: dict[str, Any]) -> Rotation:
    """One GET layer -> Rotation; restrictions are in the zone the schedule was read in."""
    from syncd.migrate.schedule import Rotation, Window

    windows = []
    for r in raw.get("restrictions") or []:
        start = time.fromisoformat(r["start_time_of_day"])
        duration = timedelta(seconds=int(r["duration_seconds"]))
        if r["type"] == "daily_restriction":
            windows.append(Window(None, start, duration))
        elif r["type"] == "weekly_restriction":
            day = int(r["start_day_of_week"])
            if not 1 <= day <= 7:
                raise ValueError(f"start_day_of_week {day}")
            windows.append(Window(day - 1, start, duration))  # PagerDuty 1 = Monday; ours 0
        else:
            raise ValueError(f"unknown restriction type {r['type']!r}")
    turn = raw["rotation_turn_length_seconds"]
    if not isinstance(turn, int):
        raise TypeError("rotation_turn_length_seconds is not an integer")
    return Rotation(id=raw["id"], name=str(raw.get("name") or raw["id"]),
                    users=tuple(_ref_id(u["user"]) for u in raw["users"]),
                    anchor=parse_time(raw["rotation_virtual_start"]),
                    handovers=(timedelta(seconds=turn),), windows=tuple(windows),
                    start=parse_time(raw["start"]), end=optional_time(raw.get("end")))


def _restriction(w: Window) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "daily_restriction" if w.weekday is None
                           else "weekly_restriction",
                           "start_time_of_day": w.start.strftime("%H:%M:%S"),
                           "duration_seconds": int(w.duration.total_seconds())}
    if w.weekday is not None:
        out["start_day_of_week"] = w.weekday + 1
    return out


def _local(dt: datetime, zone: ZoneInfo) -> str:
    return dt.astimezone(zone).replace(microsecond=0).isoformat()


def _stripped(layer: dict[str, Any]) -> dict[str, Any]:
    """A GET layer as a PUT layer: without what only answers carry."""
    return {k: v for k, v in layer.items()
            if k not in ("rendered_schedule_entries", "rendered_coverage_percentage")}


def _policy(raw: dict[str, Any]) -> Policy:
    from syncd.migrate.policy import Level, Policy, Target

    levels, unsupported = [], []
    for number, rule in enumerate(raw["escalation_rules"], 1):
        targets = []
        for t in rule["targets"]:
            kind = t.get("type")
            if kind in USER_TYPES:
                targets.append(Target("user", _ref_id(t)))
            elif kind in SCHEDULE_TYPES:
                targets.append(Target("schedule", _ref_id(t)))
            else:
                raise ValueError(f"unknown target type {kind!r}")
        delay = rule["escalation_delay_in_minutes"]
        if not isinstance(delay, int):
            raise TypeError("escalation_delay_in_minutes is not an integer")
        # A PagerDuty acknowledgement stops the incident's escalation for everyone: incident.io's
        # ack_mode "first" ("cancelling all other escalations on the same level when someone
        # acks", openapi.json EscalationPathNodeLevelV2), which a copy must say, not leave unset.
        strategy, odd = _strategy(rule, number)
        unsupported += odd
        levels.append(Level(tuple(targets), timedelta(minutes=delay), ack_mode="first",
                            round_robin=strategy == "round_robin"))
    loops = raw.get("num_loops") or 0
    if not isinstance(loops, int):
        raise TypeError("num_loops is not an integer")
    teams = raw.get("teams") or []
    team = teams[0].get("id") if teams and isinstance(teams[0], dict) else None
    return Policy(id=raw["id"], name=str(raw.get("name") or raw["id"]), levels=tuple(levels),
                  repeats=loops, team=team if isinstance(team, str) else None,
                  unsupported=tuple(unsupported))


def _strategy(rule: dict[str, Any], number: int) -> tuple[str, list[str]]:
    """``escalation_rule_assignment_strategy`` and what of it syncd cannot carry. The spec's
    schema says a string (what syncd writes), its request and answer examples
    ``{"type": "round_robin"}``, one example a list of one such object: all are read. Absent
    (an account without the feature) is PagerDuty's default, everyone on the rule. An unknown
    value, or several in the list, is named for ``Policy.unsupported``: only that policy is
    refused (read as everyone it would page people the source does not)."""
    raw = rule.get("escalation_rule_assignment_strategy")
    if isinstance(raw, list):
        values = [r.get("type") if isinstance(r, dict) else r for r in raw]
        if len(values) > 1:
            return "assign_to_everyone", [
                f"assigns level {number} by {len(values)} strategies at once "
                f"({', '.join(repr(v) for v in values)})"]
        raw = raw[0] if raw else None
    value = raw.get("type") if isinstance(raw, dict) else raw
    if value is None:
        return "assign_to_everyone", []
    if value not in ("round_robin", "assign_to_everyone"):
        return "assign_to_everyone", [f"assigns level {number} by an unknown strategy "
                                      f"{value!r}"]
    return str(value), []


def _assigned(rule: dict[str, Any]) -> bool:
    """The rule names a strategy other than the default, everyone: round robin, a value
    syncd does not know, or several at once (all read as everyone, for ``unsupported``)."""
    value, odd = _strategy(rule, 0)
    return value != "assign_to_everyone" or bool(odd)


def _by_marker(listed: dict[str, dict[str, Any]], marker: str) -> str | None:
    for oid, raw in listed.items():
        if marker in str(raw.get("description") or ""):
            return oid
    return None


def cover(entries: Sequence[tuple[datetime, datetime, str]], since: datetime,
          until: datetime) -> list[Span]:
    """Entries (start, end, user), sorted, as maximal spans covering [since, until): gaps are
    spans of nobody, adjacent entries of one person join (PagerDuty splits at hand-offs).
    ValueError when entries overlap (one person per schedule at a time)."""
    from syncd.migrate.schedule import Span

    spans: list[Span] = []
    cursor = since

    def add(a: datetime, b: datetime, users: frozenset[str]) -> None:
        if b <= a:
            return
        if spans and spans[-1].users == users and spans[-1].end == a:
            spans[-1] = Span(spans[-1].start, b, users)
        else:
            spans.append(Span(a, b, users))

    for start, end, user in entries:
        start, end = max(start, since), min(end, until)
        if end <= start:
            continue
        if start < cursor:
            raise ValueError(f"entries overlap at {start.isoformat()}")
        add(cursor, start, frozenset())
        add(start, end, frozenset({user}))
        cursor = end
    add(cursor, until, frozenset())
    return spans


def with_overrides(spans: Sequence[Span], overrides: Sequence[Override]) -> list[Span]:
    """``spans`` with whole-schedule overrides on top, the last one winning where they
    overlap (PagerDuty: "the last created override will have priority", notes §5.9)."""
    if not spans:
        return []
    since, until = spans[0].start, spans[-1].end
    points = sorted({since, until, *(s.start for s in spans),
                     *(t for o in overrides for t in (o.start, o.end) if since < t < until)})
    out: list[tuple[datetime, datetime, str]] = []
    for a, b in itertools.pairwise(points):
        over = [o for o in overrides if o.start <= a < o.end]
        if over:
            out.append((a, b, over[-1].user))
            continue
        base = next(s for s in spans if s.start <= a < s.end)
        out.extend((a, b, u) for u in base.users)
    return cover(out, since, until)
