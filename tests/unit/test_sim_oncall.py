"""The simulators' shared on-call arithmetic (syncd/simulators/oncall.py): rotations in a time
zone keep their wall-clock handover across DST, restrictions leave gaps, later layers win,
overrides win over layers and the highest ranked override wins where they overlap."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from syncd.simulators.oncall import EPOCH, Layer, Restriction, Span, final

NY_START = datetime(2024, 3, 1, 14, 0, tzinfo=UTC)  # 09:00 in New York (EST, UTC-5)


@dataclass
class Ov:
    user: str
    start: datetime
    end: datetime
    seq: int


def users(spans: list[Span]) -> list[tuple[str | None, datetime, datetime]]:
    return [(s.user, s.start, s.end) for s in spans]


def test_rotation_from_the_common_epoch() -> None:
    layer = Layer(("a", "b", "c"), timedelta(days=1))
    assert layer.shift_at(EPOCH) == ("a", EPOCH, EPOCH + timedelta(days=1))
    assert layer.shift_at(EPOCH - timedelta(seconds=1))[0] == "c"
    assert layer.shift_at(EPOCH + timedelta(days=4, hours=3))[0] == "b"


def test_daily_handover_keeps_local_time_across_dst() -> None:
    layer = Layer(("a", "b"), timedelta(days=1), start=NY_START, zone="America/New_York")
    # DST starts 2024-03-10 02:00 local: 09:00 EST is 14:00 UTC before, 13:00 UTC after.
    before = layer.shift_at(datetime(2024, 3, 9, 15, 0, tzinfo=UTC))
    after = layer.shift_at(datetime(2024, 3, 11, 15, 0, tzinfo=UTC))
    assert before[1] == datetime(2024, 3, 9, 14, 0, tzinfo=UTC)
    assert after[1] == datetime(2024, 3, 11, 13, 0, tzinfo=UTC)
    across = layer.shift_at(datetime(2024, 3, 10, 12, 0, tzinfo=UTC))  # 08:00 EDT
    assert across[2] - across[1] == timedelta(hours=23)  # the short day
    assert [u for u, _a, _b in layer.turns(NY_START, NY_START + timedelta(days=4))] == \
        ["a", "b", "a", "b"]


def test_restrictions_leave_gaps_that_lower_layers_fill() -> None:
    base = Layer(("night",), timedelta(days=7))
    office = Layer(("x", "y"), timedelta(days=1),
                   restrictions=(Restriction(time(9), timedelta(hours=8)),))
    day = datetime(2024, 1, 2, 0, 0, tzinfo=UTC)
    spans = final([base, office], [], day, day + timedelta(days=1), user_of=lambda o: o.user)
    assert users(spans) == [("night", day, day + timedelta(hours=9)),
                            ("y", day + timedelta(hours=9), day + timedelta(hours=17)),
                            ("night", day + timedelta(hours=17), day + timedelta(days=1))]
    alone = final([office], [], day, day + timedelta(days=1), user_of=lambda o: o.user)
    assert alone[0].user is None and alone[1].user == "y"


def test_weekly_restriction() -> None:
    weekend = Layer(("w",), timedelta(days=7),
                    restrictions=(Restriction(time(0), timedelta(days=2), weekday=5),))
    assert weekend.on_call(datetime(2024, 1, 6, 12, tzinfo=UTC)) is not None  # Saturday
    assert weekend.on_call(datetime(2024, 1, 8, 12, tzinfo=UTC)) is None  # Monday


def test_latest_override_wins_and_spans_join_by_rule() -> None:
    layer = Layer(("a",), timedelta(hours=12))
    t0 = EPOCH
    first, second = Ov("o1", t0 + timedelta(hours=1), t0 + timedelta(hours=5), 1), \
        Ov("o2", t0 + timedelta(hours=3), t0 + timedelta(hours=4), 2)
    spans = final([layer], [first, second], t0, t0 + timedelta(hours=24),
                  user_of=lambda o: o.user, rank=lambda o: o.seq)
    assert [(s.user, s.start - t0) for s in spans] == [
        ("a", timedelta(0)), ("o1", timedelta(hours=1)), ("o2", timedelta(hours=3)),
        ("o1", timedelta(hours=4)), ("a", timedelta(hours=5))]
    # The default rule joins the rotation across its handover at 12:00 (same source) ...
    assert spans[-1].end == t0 + timedelta(hours=24)
    # ... a rule that keeps handovers apart does not.
    kept = final([layer], [], t0, t0 + timedelta(hours=24), user_of=lambda o: o.user,
                 joinable=lambda p, n: p.user == n.user and not n.handover)
    assert [s.start - t0 for s in kept] == [timedelta(0), timedelta(hours=12)]
