"""A vendor-neutral escalation policy and its conversion, step by step.

PagerDuty escalation policies and incident.io escalation paths both page levels in order, each
level after a delay, and both loop a number of times (PagerDuty ``num_loops`` 0..9, incident.io
a repeat node); vendor-notes/migration.md §5 R16-R20. What does not carry over is named per step
rather than dropped: incident.io's conditional branches (working hours, priority) have no
PagerDuty form, and PagerDuty counts delays in whole minutes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

from syncd.migrate.convert import Conversion, Refusal, TargetModel

PAGERDUTY_MAX_LOOPS = 9  # PagerDuty REST spec, EscalationPolicy.num_loops maximum


@dataclass(frozen=True, slots=True)
class Target:
    kind: Literal["user", "schedule"]
    id: str
    low_urgency: bool = False  # incident.io target ``urgency: low``; PagerDuty has none


@dataclass(frozen=True, slots=True)
class Level:
    """Page ``targets``; if nobody acknowledges within ``delay``, go to the next level.

    ``ack_mode`` and ``retry`` are incident.io's (openapi.json ``EscalationPathNodeLevelV2``):
    "all" keeps paging the others of a level after one acks, "first" stops them as a PagerDuty
    acknowledgement does; ``retry`` is (attempts, interval) of paging the level again.
    ``round_robin``: each incident pages one of the targets, in turn, not all of them
    (PagerDuty ``escalation_rule_assignment_strategy: round_robin``, incident.io
    ``round_robin_config.enabled``); ``rotate_after`` is incident.io's "how long should we wait
    before rotating to the next target", None = "stick with a single target per level"."""

    targets: tuple[Target, ...]
    delay: timedelta
    conditional: bool = False  # reached only under a condition (incident.io if/else branch)
    ack_mode: Literal["all", "first"] | None = None
    retry: tuple[int, timedelta] | None = None
    round_robin: bool = False
    rotate_after: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    name: str
    levels: tuple[Level, ...]
    repeats: int = 0  # how many times the whole policy runs again after the last level
    team: str | None = None
    # What the source policy does that these levels cannot carry (named by the vendor reader):
    # a target scoped to one rota, all users or the next on call, a channel, a repeat from a
    # later level. Converting would page other people, so such a policy is refused.
    unsupported: tuple[str, ...] = ()

    def schedules(self) -> set[str]:
        return {t.id for lvl in self.levels for t in lvl.targets if t.kind == "schedule"}

    def users(self) -> set[str]:
        return {t.id for lvl in self.levels for t in lvl.targets if t.kind == "user"}


@dataclass(frozen=True, slots=True)
class StepConversion:
    level: int  # 1-based, as the vendors number them
    klass: Conversion
    loss: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyConversion:
    source: Policy
    klass: Conversion
    target: Policy | None = None
    steps: tuple[StepConversion, ...] = ()
    losses: tuple[str, ...] = ()
    refusal: Refusal | None = None
    notes: tuple[str, ...] = ()  # what to check in the target, not a loss


# docs/migration.md "Round robin": both vendors page one target per incident; no source shows
# they pick the same one, so every copied round-robin level says so, into either vendor.
ROUND_ROBIN_NOTE = ("round robin: equivalence inferred; trigger test incidents in both tools "
                    "before cut-over")
# support.pagerduty.com/docs/round-robin-scheduling: round robin is a feature of some plans.
ROUND_ROBIN_PLAN_NOTE = (
    "round robin, which PagerDuty offers only on some plans (support.pagerduty.com/docs/"
    "round-robin-scheduling); how an account without it treats the rule is not documented: "
    "check the target account's plan includes it, and that the rule reads round robin after "
    "apply")


def convert_policy(source: Policy, target: TargetModel, *,
                   schedules: Mapping[str, str], users: Mapping[str, str],
                   source_vendor: str | None = None) -> PolicyConversion:
    """``schedules``/``users`` map source ids to target ids (people by matched email first).
    The caller refuses the policy before this when a dependency was refused or unmatched, so
    the root cause is named once, on the object that has it. ``source_vendor`` "pagerduty":
    a round-robin rule with one target is copied without round robin (:func:`_ring_of_one`)."""
    if source.unsupported:
        return PolicyConversion(source, Conversion.REFUSED, refusal=Refusal(
            "unsupported_escalation_feature",
            f"escalation policy {source.name!r} " + "; ".join(source.unsupported)
            + ", which syncd cannot carry to another policy without paging other people; "
            "change that in the source or migrate the policy by hand"))
    if not source.levels:
        return PolicyConversion(source, Conversion.REFUSED, refusal=Refusal(
            "empty_policy", f"escalation policy {source.name!r} has no levels to page"))
    steps: list[StepConversion] = []
    levels: list[Level] = []
    losses: list[str] = []
    notes: list[str] = []
    for number, level in enumerate(source.levels, start=1):
        if _ring_of_one(level, source_vendor):
            level = replace(level, round_robin=False)
            notes.append(f"level {number}: PagerDuty round robin over one target assigns it "
                         "every incident, as paging everyone on the rule does: copied without "
                         "round robin")
        if level.conditional:
            # PagerDuty rules have no condition, and neither client writes incident.io
            # if/else branches: into either target the level would page unconditionally,
            # or the write would fail halfway through apply.
            return PolicyConversion(source, Conversion.REFUSED, refusal=Refusal(
                "conditional_branch_unsupported",
                f"level {number} of {source.name!r} is reached only under a condition "
                f"(working hours or priority), which syncd cannot write to {target.vendor} "
                "escalation rules"))
        lost = _carried(level, target.vendor)
        delay = level.delay
        if target.vendor == "pagerduty" and delay % timedelta(minutes=1):
            delay = timedelta(minutes=math.ceil(delay / timedelta(minutes=1)))
            lost.insert(0, f"delay {level.delay} rounded up to {delay} (PagerDuty counts "
                        "whole minutes)")
        carried = target.vendor == "incidentio"
        targets = tuple(replace(t, id=(schedules if t.kind == "schedule" else users)[t.id],
                                low_urgency=carried and t.low_urgency) for t in level.targets)
        if carried:
            levels.append(replace(level, targets=targets, delay=delay))
        else:  # what _carried named: PagerDuty rules have no field for it
            levels.append(replace(level, targets=targets, delay=delay, ack_mode=None,
                                  retry=None, rotate_after=None))
        if level.round_robin:
            notes.append(f"level {number}: {ROUND_ROBIN_NOTE}")
            if target.vendor == "pagerduty":
                notes.append(f"level {number}: {ROUND_ROBIN_PLAN_NOTE}")
        loss = "; ".join(lost) or None
        steps.append(StepConversion(number, Conversion.LOSSY if loss else Conversion.EXACT,
                                    loss))
        if loss:
            losses.append(f"level {number}: {loss}")
    repeats = source.repeats
    if target.vendor == "pagerduty" and repeats > PAGERDUTY_MAX_LOOPS:
        losses.append(f"repeats {repeats} capped at PagerDuty's maximum {PAGERDUTY_MAX_LOOPS}")
        repeats = PAGERDUTY_MAX_LOOPS
    converted = replace(source, levels=tuple(levels), repeats=repeats)
    return PolicyConversion(source, Conversion.LOSSY if losses else Conversion.EXACT,
                            converted, tuple(steps), tuple(losses), notes=tuple(notes))


def _ring_of_one(level: Level, source_vendor: str | None) -> bool:
    """A PagerDuty round-robin rule with one target: "users are placed in a ring and assigned
    to incidents sequentially", the ring being the rule's targets (support.pagerduty.com/docs/
    round-robin-scheduling), so a ring of one assigns that target every incident, exactly what
    paging everyone on the rule does. Copied as round robin it would page something else into
    incident.io, whose turns may run over a schedule's people ("everyone chosen in the level
    or schedule will take turns", docs.incident.io/on-call/round-robin), and into PagerDuty it
    would need the plan feature for nothing. Another source's level is kept as it is: that
    incident.io takes no turns over one target is not documented."""
    return source_vendor == "pagerduty" and level.round_robin and len(level.targets) == 1

def _carried(level: Level, vendor: str) -> list[str]:
    """What an incident.io level does that a PagerDuty escalation rule cannot (its REST spec
    ``EscalationRule`` has only a delay and targets): low-urgency targets (urgency belongs to
    PagerDuty's service, not the rule), ack mode "all" (a PagerDuty acknowledgement stops the
    incident's escalation for everyone, incident.io's "first"), and paging the level again
    (``retry_config``), and a round robin that moves on within the level
    (``round_robin_config.rotate_after_seconds``; PagerDuty's strategy has no interval).
    incident.io as target carries them all; round robin itself carries both ways."""
    if vendor == "incidentio":
        return []
    lost = []
    low = [t.id for t in level.targets if t.low_urgency]
    if low:
        lost.append(f"pages {', '.join(low)} at low urgency; {vendor} rules carry no urgency "
                    "(the service's applies)")
    if level.ack_mode == "all":
        lost.append(f"ack_mode 'all' keeps paging the others after one acknowledges; in "
                    f"{vendor} one acknowledgement stops it")
    if level.retry is not None:
        attempts, interval = level.retry
        lost.append(f"pages the level {attempts} times, every {interval}; {vendor} pages it "
                    "once")
    if level.round_robin and level.rotate_after is not None:
        lost.append(f"round robin moves on to the next target after {level.rotate_after}; "
                    f"{vendor} round robin pages one target per incident and escalates to the "
                    "next level after the delay")
    return lost
