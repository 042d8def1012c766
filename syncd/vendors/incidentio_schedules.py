"""incident.io as a migration source and target: schedules and escalation paths in
:mod:`syncd.migrate` terms (:class:`~syncd.migrate.api.ScheduleTarget`).

Reading (openapi.json ``ScheduleV2``, ``EscalationPathV2``; docs/vendors/incidentio.md):

- A schedule is ``Schedule(precedence=False)``: incident.io rotations all page at once
  ("entries are returned for every rotation and layer on the schedule"). Each rotation is a
  ``Rotation`` anchored at ``handover_start_at`` with its ``handovers`` cycled, its working
  intervals as weekly windows (weekday names -> 0..6 from Monday). A rotation with later
  versions (``effective_from``) becomes one ``Rotation`` per version bounded by its dates; the
  first keeps the rotation's id, later ones are ``<id>@<effective_from>``.
- Overrides that have not ended are read per rotation (``Override.rotation_id``).
- A path's ``level`` nodes are levels (``delay`` = ``time_to_ack_seconds``, a following
  ``delay`` node adds to it), a ``repeat`` node gives ``repeats``, and the levels inside an
  ``if_else`` branch are ``Level(conditional=True)``: reached only under a condition. What a
  level cannot carry (a schedule paged for one rota, all its users or the next on call; a
  channel; a repeat from a later node; other node types) is named in
  ``Policy.unsupported``, and the plan refuses the policy (``_Walk``).
- ``rendered`` is ``GET /v2/schedule_entries`` ``final``, paged to the end.

Writing:

- The marker goes where incident.io keeps free text: a schedule's ``annotations``
  (``syncd/migration-marker``); escalation paths have no such field (neither description nor
  annotations in ``EscalationsCreatePathPayloadV2``), so the marker is a name suffix
  ``" [<marker>]"``.
- An update keeps the target's rotation and layer ids (matched by name, else position), so
  overrides made on them survive the rewrite.
- ``preview`` asks ``POST /v2/schedules/{id}/actions/preview_entries`` (on any schedule of the
  account: the payload is rendered, nothing is saved) once per rotation and 91-day window, and
  lays the schedule's own overrides on each rotation's entries, as incident.io does in
  ``final`` (an override replaces its rotation's person). None when the account has no
  schedule to preview on.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from syncd import metrics
from syncd.migrate import ModelOf
from syncd.vendors._http import VendorHTTP, require
from syncd.vendors.base import MalformedResponse, PermanentError
from syncd.vendors.client import parse_time as _time
from syncd.vendors.client import stamp

if TYPE_CHECKING:
    from syncd.migrate.convert import TargetModel
    from syncd.migrate.policy import Level, Policy, Target
    from syncd.migrate.schedule import Override, Rotation, Schedule, Span, Window

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
INTERVALS = (("weekly", timedelta(weeks=1)), ("daily", timedelta(days=1)),
             ("hourly", timedelta(hours=1)))
MARKER_KEY = "syncd/migration-marker"
PREVIEW_SPAN = timedelta(days=91)  # preview_entries answers at most 91 days (spec)
MAX_PAGES = 10_000
DAY = timedelta(days=1)


def _stamp(dt: datetime) -> str:
    return stamp(dt, "us")


def spans_of(entries: Iterable[tuple[str, datetime, datetime]], since: datetime,
             until: datetime) -> list[Span]:
    """Entries (user, start, end), possibly overlapping (one per rotation), as the maximal
    spans of unchanged on-call over [since, until), the shape :func:`schedule.render` has."""
    from syncd.migrate.schedule import Span

    rows = [(u, max(a, since), min(b, until)) for u, a, b in entries if b > since and a < until]
    points = sorted({since, until} | {a for _, a, _ in rows} | {b for _, _, b in rows})
    out: list[Span] = []
    for a, b in itertools.pairwise(points):
        users = frozenset(u for u, x, y in rows if x <= a < y)
        if out and out[-1].users == users:
            out[-1] = replace(out[-1], end=b)
        else:
            out.append(Span(a, b, users))
    return out


class ScheduleMigration:
    """The migration half of :class:`~syncd.vendors.incidentio.IncidentIOClient`: every call
    goes through the client's HTTP session, so its budget, retries and typed errors apply."""

    schedule_model: ClassVar[TargetModel] = ModelOf("INCIDENTIO")  # type: ignore[assignment]
    account: str
    http: VendorHTTP
    _clock: Callable[[], datetime]
    _rotation_ids: dict[str, dict[str, tuple[str, str]]]

    if TYPE_CHECKING:  # provided by ClientBase / IncidentIOClient
        def _malformed(self, endpoint: str, what: str) -> MalformedResponse: ...

        def _list(self, route: str, key: str, params: dict[str, Any]
                  ) -> AsyncIterator[list[Any]]: ...

        def _check_failure(self, data: Any, endpoint: str) -> None: ...

    def _now(self) -> datetime:
        return self._clock()

    def _placed(self, target_id: str) -> dict[str, tuple[str, str]]:
        """Source rotation id -> (target rotation id, layer id), learned by create/update."""
        if not hasattr(self, "_rotation_ids"):
            self._rotation_ids = {}
        return self._rotation_ids.setdefault(target_id, {})

    # ------------------------------------------------------------------ reading schedules

    async def _raw_schedules(self, ids: Sequence[str] | None) -> list[dict[str, Any]]:
        if ids is None:
            found: list[dict[str, Any]] = []
            async for items in self._list("/v2/schedules", "schedules", {"page_size": 100}):
                found += [s for s in items if isinstance(s, dict)]
            return found
        return [await self._raw_schedule(sid) for sid in ids]

    async def _raw_schedule(self, sid: str) -> dict[str, Any]:
        endpoint = "GET /v2/schedules/{id}"
        data = await self.http.json("GET", "/v2/schedules/{id}", path={"id": sid})
        self._check_failure(data, endpoint)
        return require(data, "schedule", dict, endpoint=endpoint, account=self.account)

    async def read_schedules(self, ids: Sequence[str] | None = None,
                             teams: Sequence[str] | None = None) -> list[Schedule]:
        out = []
        for raw in await self._raw_schedules(ids):
            team_ids = [t for t in raw.get("team_ids") or [] if isinstance(t, str)]
            if teams is not None and not set(team_ids) & set(teams):
                continue
            schedule = self._schedule(raw)
            if schedule.unconvertible is not None:  # refused whatever its overrides are
                out.append(schedule)
                continue
            overrides = await self._overrides(schedule)
            out.append(replace(schedule, overrides=tuple(overrides)))
        return out

    def _schedule(self, raw: dict[str, Any]) -> Schedule:
        from syncd.migrate.schedule import Schedule

        endpoint = "GET /v2/schedules"
        try:
            sid, name, zone = raw["id"], raw["name"], raw["timezone"]
            team_ids = [t for t in raw.get("team_ids") or [] if isinstance(t, str)]
            team = team_ids[0] if team_ids else None
            odd = (_concurrent_layers(raw["config"]["rotations"])
                   or _unknown_mode(raw["config"]["rotations"]))
            if odd is not None:  # this schedule only: the others read on
                return Schedule(sid, name, zone, (), precedence=False, team=team,
                                unconvertible=odd)
            versions: dict[str, list[dict[str, Any]]] = {}
            for rot in raw["config"]["rotations"]:
                versions.setdefault(rot["id"], []).append(rot)
            rotations: list[Rotation] = []
            for rid, rows in versions.items():
                rotations += self._versions(rid, rows)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise self._malformed(endpoint, f"schedule {raw.get('id')!r}: {exc}") from None
        return Schedule(sid, name, zone, tuple(rotations), precedence=False, team=team)

    def _versions(self, rid: str, rows: list[dict[str, Any]]) -> list[Rotation]:
        from syncd.migrate.schedule import Rotation

        rows = sorted(rows, key=lambda r: _time(r["effective_from"]) if r.get(
            "effective_from") else datetime.min.replace(tzinfo=UTC))
        out = []
        for i, row in enumerate(rows):
            start = _time(row["effective_from"]) if row.get("effective_from") else None
            end = (_time(rows[i + 1]["effective_from"]) if i + 1 < len(rows) else None)
            vid = rid if start is None else f"{rid}@{_stamp(start)}"
            handovers = tuple(_length(h) for h in row["handovers"])
            out.append(Rotation(
                vid, row["name"], tuple(u["id"] for u in row["users"]),
                _time(row["handover_start_at"]), handovers,
                tuple(_window(w) for w in row.get("working_intervals") or []),
                start, end, fair=_fair(row, handovers)))
        return out

    async def _overrides(self, schedule: Schedule) -> list[Override]:
        """Overrides that have not ended, on the version of their rotation they fall in."""
        from syncd.migrate.schedule import Override

        endpoint = "GET /v2/schedule_overrides"
        now = self._now()
        out = []
        async for items in self._list("/v2/schedule_overrides", "overrides",
                                      {"schedule_id": schedule.id, "page_size": 250}):
            for raw in items:
                try:
                    rid, uid = raw["rotation_id"], raw["user"]["id"]
                    a, b = _time(raw["start_at"]), _time(raw["end_at"])
                except (KeyError, TypeError, ValueError):
                    metrics.MALFORMED.labels(self.account, endpoint).inc()
                    continue
                if b <= now:
                    continue
                for rot in schedule.rotations:
                    if rot.id.split("@")[0] != rid:
                        continue
                    x = max(a, rot.start) if rot.start else a
                    y = min(b, rot.end) if rot.end else b
                    if x < y:
                        out.append(Override(x, y, uid, rot.id, raw.get("id")))
        return sorted(out, key=lambda o: (o.start, o.rotation_id or ""))

    async def rendered(self, schedule_id: str, since: datetime, until: datetime) -> list[Span]:
        entries: list[tuple[str, datetime, datetime]] = []
        async for page in self._entry_pages(schedule_id, since, until):
            entries += [(uid, a, b) for uid, a, b, _ in self._rows(page, "final")]
        return spans_of(entries, since, until)

    async def _entry_pages(self, sid: str, since: datetime, until: datetime
                           ) -> AsyncIterator[dict[str, Any]]:
        """Every ``schedule_entries`` page of the window: resend with ``after`` as the start
        and the same end until ``pagination_meta`` is absent (notes 5)."""
        endpoint = "GET /v2/schedule_entries"
        start = since
        for _ in range(MAX_PAGES):
            data = await self.http.json("GET", "/v2/schedule_entries", params={
                "schedule_id": sid, "entry_window_start": _stamp(start),
                "entry_window_end": _stamp(until)})
            self._check_failure(data, endpoint)
            yield require(data, "schedule_entries", dict, endpoint=endpoint,
                          account=self.account)
            meta = data.get("pagination_meta")
            after = meta.get("after") if isinstance(meta, dict) else None
            if not isinstance(after, str) or not after or _time(after) <= start:
                return
            start = _time(after)
        raise self._malformed(endpoint, f"more than {MAX_PAGES} pages")

    def _rows(self, entries: dict[str, Any], kind: str
              ) -> list[tuple[str, datetime, datetime, dict[str, Any]]]:
        """(user id, start, end, the user object) of one entry list; bad entries counted."""
        endpoint = "GET /v2/schedule_entries"
        out = []
        for entry in require(entries, kind, list, endpoint=endpoint, account=self.account):
            try:
                user = entry["user"]
                out.append((user["id"], _time(entry["start_at"]), _time(entry["end_at"]),
                            user))
            except (KeyError, TypeError, ValueError):
                metrics.MALFORMED.labels(self.account, endpoint).inc()
        return out

    # ------------------------------------------------------------------ writing schedules

    def _payload(self, schedule: Schedule, marker: str | None,
                 keep: dict[str, tuple[str, str]] | None = None) -> dict[str, Any]:
        rotations = []
        for rot in schedule.rotations:
            if rot.start is not None or rot.end is not None:
                raise PermanentError(f"rotation {rot.name!r} starts or ends on a date; syncd "
                                     "does not write rotation versions", account=self.account)
            if None in rot.users:
                raise PermanentError(f"rotation {rot.name!r} has a 'nobody' place, which "
                                     "incident.io's REST API does not document",
                                     account=self.account)
            body: dict[str, Any] = {
                "name": rot.name, "users": [{"id": u} for u in rot.users],
                "handover_start_at": _stamp(rot.anchor),
                "handovers": [_handover(h) for h in rot.handovers],
                "working_intervals": _working(rot.windows),
                "layers": [{"name": "Layer 1"}],
                # The turn order syncd's model renders; a fair rotation is refused before
                # any write (convert), so there is never a "fair" to send.
                "scheduling_mode": "sequential",
            }
            if keep and rot.id in keep:
                body["id"], layer = keep[rot.id]
                body["layers"] = [{"id": layer, "name": "Layer 1"}]
            rotations.append(body)
        out: dict[str, Any] = {"name": schedule.name, "timezone": schedule.time_zone,
                               "config": {"rotations": rotations}}
        if marker is not None:
            out["annotations"] = {MARKER_KEY: marker}
        return out

    def _learn(self, target_id: str, schedule: Schedule, answer: Any, endpoint: str) -> None:
        raw = require(answer, "schedule", dict, endpoint=endpoint, account=self.account)
        try:
            made = raw["config"]["rotations"]
            placed = {rot.id: (m["id"], m["layers"][0]["id"])
                      for rot, m in zip(schedule.rotations, made, strict=True)}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise self._malformed(endpoint, f"rotations not as written: {exc}") from None
        self._placed(target_id).update(placed)

    async def create_schedule(self, schedule: Schedule, marker: str) -> str:
        endpoint = "POST /v2/schedules"
        data = await self.http.json("POST", "/v2/schedules",
                                    json={"schedule": self._payload(schedule, marker)})
        self._check_failure(data, endpoint)
        sid = data.get("schedule", {}).get("id") if isinstance(data, dict) else None
        if not isinstance(sid, str) or not sid:
            raise self._malformed(endpoint, "answer carries no schedule id")
        self._learn(sid, schedule, data, endpoint)
        return sid

    async def update_schedule(self, target_id: str, schedule: Schedule, marker: str) -> None:
        endpoint = "PUT /v2/schedules/{id}"
        current = await self._raw_schedule(target_id)
        keep = self._keep(schedule, current)
        payload = self._payload(schedule, None, keep)
        notes = current.get("annotations") if isinstance(current.get("annotations"),
                                                          dict) else {}
        payload["annotations"] = {**notes, MARKER_KEY: marker}
        data = await self.http.json("PUT", "/v2/schedules/{id}", path={"id": target_id},
                                    json={"schedule": payload})
        self._check_failure(data, endpoint)
        self._learn(target_id, schedule, data, endpoint)

    def _keep(self, schedule: Schedule, current: dict[str, Any]
              ) -> dict[str, tuple[str, str]]:
        """The target rotations (and their layer) each source rotation rewrites: by name when
        names are unique, else by position, so overrides on them stay attached."""
        try:
            existing = [(r["id"], r["layers"][0]["id"], r["name"])
                        for r in current["config"]["rotations"] if r.get("layers")]
        except (KeyError, TypeError, IndexError):
            existing = []
        existing = list({rid: (rid, lid, n) for rid, lid, n in existing}.values())
        names = [n for _, _, n in existing]
        keep: dict[str, tuple[str, str]] = {}
        free = list(existing)
        for rot in schedule.rotations:
            match = next((e for e in free if e[2] == rot.name), None) \
                if names.count(rot.name) == 1 else None
            if match is not None:
                free.remove(match)
                keep[rot.id] = (match[0], match[1])
        for rot in schedule.rotations:
            if rot.id not in keep and free:
                rid, lid, _ = free.pop(0)
                keep[rot.id] = (rid, lid)
        return keep

    async def find_schedule(self, marker: str) -> str | None:
        for raw in await self._raw_schedules(None):
            notes = raw.get("annotations")
            if isinstance(notes, dict) and notes.get(MARKER_KEY) == marker:
                sid = raw.get("id")
                return sid if isinstance(sid, str) else None
        return None

    async def sync_overrides(self, target_id: str, overrides: Sequence[Override]) -> int:
        endpoint = "POST /v2/schedule_overrides"
        if not overrides:
            return 0
        placed = dict(self._placed(target_id))
        current = await self._raw_schedule(target_id)
        rotations = [(r["id"], r["layers"][0]["id"]) for r in current["config"]["rotations"]
                     if r.get("layers")]
        for rid, lid in rotations:
            placed.setdefault(rid, (rid, lid))
        have: set[tuple[str, str, datetime, datetime]] = set()
        async for items in self._list("/v2/schedule_overrides", "overrides",
                                      {"schedule_id": target_id, "page_size": 250}):
            for raw in items:
                try:
                    have.add((raw["rotation_id"], raw["user"]["id"], _time(raw["start_at"]),
                              _time(raw["end_at"])))
                except (KeyError, TypeError, ValueError):
                    metrics.MALFORMED.labels(self.account, "GET /v2/schedule_overrides").inc()
        created = 0
        for o in overrides:
            where = placed.get(o.rotation_id or "") or (
                rotations[0] if len(set(rotations)) == 1 else None)
            if where is None:
                raise PermanentError(f"override {o.start.isoformat()} for {o.user} names "
                                     f"rotation {o.rotation_id!r}, which schedule {target_id} "
                                     "does not have", account=self.account, endpoint=endpoint)
            if (where[0], o.user, o.start, o.end) in have:
                continue
            data = await self.http.json("POST", "/v2/schedule_overrides", json={
                "schedule_id": target_id, "rotation_id": where[0], "layer_id": where[1],
                "start_at": _stamp(o.start), "end_at": _stamp(o.end), "user": {"id": o.user}})
            self._check_failure(data, endpoint)
            have.add((where[0], o.user, o.start, o.end))
            created += 1
        return created

    async def preview(self, schedule: Schedule, since: datetime, until: datetime
                      ) -> list[Span] | None:
        endpoint = "POST /v2/schedules/{id}/actions/preview_entries"
        host = None
        async for items in self._list("/v2/schedules", "schedules", {"page_size": 1}):
            host = next((s["id"] for s in items if isinstance(s, dict)
                         and isinstance(s.get("id"), str)), None)
            break
        if host is None:
            return None
        entries: list[tuple[str, datetime, datetime]] = []
        for rot in schedule.rotations:
            alone = replace(schedule, rotations=(rot,), overrides=())
            payload = self._payload(alone, None)
            shifts: list[tuple[str, datetime, datetime]] = []
            start = since
            while start < until:
                end = min(until, start + PREVIEW_SPAN)
                data = await self.http.json(
                    "POST", "/v2/schedules/{id}/actions/preview_entries", path={"id": host},
                    json={"schedule": payload, "entry_window_start": _stamp(start),
                          "entry_window_end": _stamp(end)})
                self._check_failure(data, endpoint)
                page = require(data, "schedule_entries", dict, endpoint=endpoint,
                               account=self.account)
                shifts += [(u, a, b) for u, a, b, _ in self._rows(page, "scheduled")]
                start = end
            entries += _overridden(shifts, [o for o in schedule.overrides
                                            if o.rotation_id == rot.id])
        return spans_of(entries, since, until)

    # ------------------------------------------------------------------ escalation paths

    async def _raw_paths(self, ids: Sequence[str] | None) -> list[dict[str, Any]]:
        if ids is None:
            found: list[dict[str, Any]] = []
            async for items in self._list("/v2/escalation_paths", "escalation_paths",
                                          {"page_size": 25}):
                found += [p for p in items if isinstance(p, dict)]
            return found
        endpoint = "GET /v2/escalation_paths/{id}"
        out = []
        for pid in ids:
            data = await self.http.json("GET", "/v2/escalation_paths/{id}", path={"id": pid})
            self._check_failure(data, endpoint)
            out.append(require(data, "escalation_path", dict, endpoint=endpoint,
                               account=self.account))
        return out

    async def read_policies(self, ids: Sequence[str] | None = None,
                            teams: Sequence[str] | None = None) -> list[Policy]:
        from syncd.migrate.policy import Policy

        out = []
        for raw in await self._raw_paths(ids):
            team_ids = [t for t in raw.get("team_ids") or [] if isinstance(t, str)]
            if teams is not None and not set(team_ids) & set(teams):
                continue
            try:
                walk = _Walk(raw["path"][0]["id"] if raw["path"] else None)
                repeats = walk.nodes(raw["path"], conditional=False)
                out.append(Policy(raw["id"], raw["name"], tuple(walk.levels), repeats,
                                  team_ids[0] if team_ids else None, tuple(walk.unsupported)))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise self._malformed("GET /v2/escalation_paths",
                                      f"path {raw.get('id')!r}: {exc}") from None
        return out

    def _path_payload(self, policy: Policy, marker: str) -> dict[str, Any]:
        nodes: list[dict[str, Any]] = []
        for n, level in enumerate(policy.levels, start=1):
            if level.conditional:
                raise PermanentError(f"level {n} of {policy.name!r} is reached only under a "
                                     "condition; syncd does not write if/else branches",
                                     account=self.account)
            body: dict[str, Any] = {
                "targets": [_target(t) for t in level.targets],
                "time_to_ack_seconds": int(level.delay.total_seconds())}
            if level.ack_mode is not None:  # optional, no documented default: never invented
                body["ack_mode"] = level.ack_mode
            if level.retry is not None:
                body["retry_config"] = {"attempts": level.retry[0],
                                        "interval_seconds": int(level.retry[1].total_seconds())}
            if level.round_robin:
                body["round_robin_config"] = {"enabled": True}
                if level.rotate_after is not None:
                    body["round_robin_config"]["rotate_after_seconds"] = int(
                        level.rotate_after.total_seconds())
            nodes.append({"id": f"level-{n}", "type": "level", "level": body})
        if policy.repeats:
            nodes.append({"id": "repeat", "type": "repeat", "repeat": {
                "repeat_times": policy.repeats, "to_node": "level-1"}})
        return {"name": f"{policy.name} [{marker}]", "path": nodes}

    async def create_policy(self, policy: Policy, marker: str) -> str:
        endpoint = "POST /v2/escalation_paths"
        data = await self.http.json("POST", "/v2/escalation_paths",
                                    json=self._path_payload(policy, marker))
        self._check_failure(data, endpoint)
        pid = data.get("escalation_path", {}).get("id") if isinstance(data, dict) else None
        if not isinstance(pid, str) or not pid:
            raise self._malformed(endpoint, "answer carries no escalation path id")
        return pid

    async def update_policy(self, target_id: str, policy: Policy, marker: str) -> None:
        endpoint = "PUT /v2/escalation_paths/{id}"
        data = await self.http.json("PUT", "/v2/escalation_paths/{id}", path={"id": target_id},
                                    json=self._path_payload(policy, marker))
        self._check_failure(data, endpoint)

    async def find_policy(self, marker: str) -> str | None:
        suffix = f"[{marker}]"
        for raw in await self._raw_paths(None):
            if isinstance(raw.get("name"), str) and raw["name"].endswith(suffix):
                pid = raw.get("id")
                return pid if isinstance(pid, str) else None
        return None


# --------------------------------------------------------------------------- conversions


def _concurrent_layers(rotations: list[dict[str, Any]]) -> tuple[str, str] | None:
    """A rotation with several ``layers`` has that many people on call at once (openapi.json
    ``ScheduleRotationV2.layers``: "Controls how many people are on-call concurrently").
    incident.io does not document how it assigns people to the layers, so syncd can neither
    model the rotation nor check a copy of it: the schedule is refused by name (reason code
    ``concurrent_layers_unsupported``), never guessed."""
    for rot in rotations:
        layers = rot["layers"]
        if not isinstance(layers, list) or not layers:
            raise ValueError(f"rotation {rot.get('id')!r} has no layers")
        if len(layers) > 1:
            return ("concurrent_layers_unsupported",
                    f"rotation {rot['name']!r} has {len(layers)} layers, so {len(layers)} "
                    "people are on call in it at once, and incident.io does not document how "
                    "it assigns them: syncd can neither render the rotation nor check a copy; "
                    "split it into one rotation per layer in the source, or migrate it by hand")
    return None


def _unknown_mode(rotations: list[dict[str, Any]]) -> tuple[str, str] | None:
    """A ``scheduling_mode`` outside the spec's enum ("fair", "sequential") on a rotation with
    alternating turn lengths: an order syncd knows nothing of, so that schedule is refused by
    name (``scheduling_mode_unknown``) while the account's others read on. With one turn
    length the mode "only applies when you have asymmetric handovers" (openapi.json
    ``ScheduleRotationV2``) and is ignored."""
    for rot in rotations:
        mode = rot.get("scheduling_mode")
        if mode in (None, "fair", "sequential"):
            continue
        if len({_length(h) for h in rot["handovers"]}) > 1:
            return ("scheduling_mode_unknown",
                    f"rotation {rot['name']!r} alternates turn lengths with scheduling_mode "
                    f"{mode!r}, which incident.io's API reference does not list, so syncd can "
                    "neither render the rotation nor check a copy; set it to 'sequential' in "
                    "the source, or migrate it by hand")
    return None


def _fair(row: dict[str, Any], handovers: tuple[timedelta, ...]) -> bool:
    """``scheduling_mode`` "fair" "balances workload by considering handover duration" and
    "only applies when you have asymmetric handovers" (openapi.json ``ScheduleRotationV2``):
    with one turn length it is ``sequential``. With several, anything but an explicit
    "sequential" is fair, since the default is not documented (a mode outside the enum was
    refused before, :func:`_unknown_mode`)."""
    return len(set(handovers)) > 1 and row.get("scheduling_mode") != "sequential"


def _length(handover: dict[str, Any]) -> timedelta:
    unit = dict(INTERVALS)[handover["interval_type"]]
    n = handover["interval"]
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"handover interval {n!r}")
    return unit * n


def _handover(length: timedelta) -> dict[str, Any]:
    for kind, unit in INTERVALS:
        if length % unit == timedelta(0):
            return {"interval_type": kind, "interval": length // unit}
    raise PermanentError(f"turn length {length} is not a whole number of hours, which "
                         "incident.io hand-overs cannot express")


def _clock(text: str) -> timedelta:
    if len(text) != 5 or text[2] != ":":
        raise ValueError(f"time {text!r} is not HH:MM")
    return timedelta(hours=int(text[:2]), minutes=int(text[3:]))


def _window(raw: dict[str, Any]) -> Window:
    from syncd.migrate.schedule import Window

    start, end = _clock(raw["start_time"]), _clock(raw["end_time"])
    minutes = int(start.total_seconds()) // 60
    return Window(WEEKDAYS.index(raw["weekday"]), time(minutes // 60, minutes % 60),
                  end - start)


def _working(windows: Sequence[Window]) -> list[dict[str, str]]:
    """Windows as per-weekday ``HH:MM`` intervals, split at midnight; ``24:00`` ends a day."""
    from syncd.migrate.schedule import normalize, windows_from_week

    out = []
    spans = normalize(iv for w in windows for iv in w.week_intervals())
    for w in windows_from_week(spans):
        start = timedelta(hours=w.start.hour, minutes=w.start.minute, seconds=w.start.second)
        end = start + w.duration
        if start % timedelta(minutes=1) or end % timedelta(minutes=1):
            raise PermanentError("working hours with seconds cannot be written to incident.io "
                                 "(HH:MM)")
        out.append({"weekday": WEEKDAYS[w.weekday or 0], "start_time": _hhmm(start),
                    "end_time": _hhmm(end)})
    return out


def _hhmm(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _overridden(shifts: list[tuple[str, datetime, datetime]], overrides: Sequence[Override]
                ) -> list[tuple[str, datetime, datetime]]:
    """One rotation's shifts with its overrides laid on top (later overrides win)."""
    out = list(shifts)
    for o in overrides:
        cut = []
        for u, a, b in out:
            cut += [(u, x, y) for x, y in ((a, min(b, o.start)), (max(a, o.end), b)) if y > x]
        out = [*cut, (o.user, o.start, o.end)]
    return out


def _target(t: Target) -> dict[str, Any]:
    urgency = "low" if t.low_urgency else "high"
    if t.kind == "schedule":
        return {"type": "schedule", "id": t.id, "urgency": urgency,
                "schedule_mode": "currently_on_call"}
    return {"type": "user", "id": t.id, "urgency": urgency}


class _Walk:
    """A path's nodes as levels in order (branch levels marked conditional), and what they do
    that a :class:`~syncd.migrate.policy.Level` cannot carry (openapi.json
    ``EscalationPathTargetV2``, ``EscalationPathNodeV2``): a schedule paged in a
    ``schedule_mode`` other than ``currently_on_call`` (one rota, all its users, the next on
    call), a Slack or Teams channel, a time-out or delay relative to working hours,
    a repeat from a node other than the first or before the last top-level node, and node
    types other than level, delay, repeat and if/else (``notify_channel``, ``voicemail``, a
    hand-over to another ``escalation_path``). Reading them as plain levels paged other people
    than the source would."""

    def __init__(self, first: str | None) -> None:
        self.first = first
        self.levels: list[Level] = []
        self.unsupported: list[str] = []

    def nodes(self, nodes: list[dict[str, Any]], *, conditional: bool) -> int:
        """Walk ``nodes``, returning the repeat count."""
        from syncd.migrate.policy import Level

        repeats = 0
        for index, node in enumerate(nodes):
            kind = node["type"]
            if kind == "level":
                body = node["level"]
                number = len(self.levels) + 1
                targets = self._targets(body["targets"], number)
                robin = body.get("round_robin_config") or {}
                rotate = robin.get("rotate_after_seconds") if robin.get("enabled") else None
                if body.get("time_to_ack_interval_condition"):
                    self.unsupported.append(f"times level {number} out relative to working "
                                            "hours")
                retry = body.get("retry_config")
                self.levels.append(Level(
                    targets, timedelta(seconds=body.get("time_to_ack_seconds") or 0),
                    conditional, body.get("ack_mode") or None,
                    (int(retry["attempts"]), timedelta(seconds=retry["interval_seconds"]))
                    if retry else None, round_robin=bool(robin.get("enabled")),
                    rotate_after=None if rotate is None else timedelta(seconds=int(rotate))))
            elif kind == "delay":
                delay = node.get("delay") or {}
                if delay.get("delay_interval_condition") or not self.levels:
                    self.unsupported.append("has a delay relative to working hours" if
                                            self.levels else "waits before its first level")
                    continue
                extra = timedelta(seconds=delay.get("delay_seconds") or 0)
                self.levels[-1] = replace(self.levels[-1], delay=self.levels[-1].delay + extra)
            elif kind == "repeat":
                if node["repeat"]["to_node"] != self.first:
                    self.unsupported.append(f"repeats from node {node['repeat']['to_node']!r},"
                                            " not from its start")
                elif not conditional and index != len(nodes) - 1:
                    # The levels after it run once; num_loops would repeat them as well.
                    self.unsupported.append(f"repeats before its last step (node "
                                            f"{node['id']!r}), so the steps after it run once")
                repeats = max(repeats, int(node["repeat"]["repeat_times"]))
            elif kind == "if_else":
                for branch in ("then_path", "else_path"):
                    repeats = max(repeats, self.nodes(node["if_else"][branch],
                                                      conditional=True))
            else:
                self.unsupported.append(f"has a {kind!r} step")
        return repeats

    def _targets(self, raw: list[dict[str, Any]], number: int) -> tuple[Target, ...]:
        from syncd.migrate.policy import Target

        out = []
        for t in raw:
            kind, mode = t.get("type"), t.get("schedule_mode") or "currently_on_call"
            if kind == "schedule" and mode != "currently_on_call":
                self.unsupported.append(f"pages schedule {t['id']} at level {number} as "
                                        f"{mode!r}, not whoever is on call across it")
            elif kind not in ("user", "schedule"):
                self.unsupported.append(f"notifies a {kind} at level {number}")
                continue
            out.append(Target(kind, t["id"], t.get("urgency") == "low"))
        return tuple(out)
