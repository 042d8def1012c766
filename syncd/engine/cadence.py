"""How often an account is polled, and every duration that follows from that, in one place.

An account's ``poll_interval`` sets when its poll job runs (with jitter, and how late a missed run
may still start), how long after a confirmed push a list that still shows the old state is taken
for list lag rather than news (``echo_grace``), and when ``/readyz`` calls its polls stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from syncd.config import Config

STRETCH_MAX = 6
"""Pushes have priority over polls (DESIGN.md): while an account's own pushes keep its budget
short, its poll is put off to the next interval at most this many times in a row, and a poll
already reading waits for its account's pushes at most this many intervals more, so a change
there is still seen within ``2 * STRETCH_MAX + 1`` poll intervals (6.5 minutes at the default
30 s) however long the backlog lasts, and ``/readyz`` allows for both waits. Enough for the
drain of a 2,000-incident storm at incident.io's documented limit (~2.5 minutes, during which
each delta poll would take ~40 of the calls the responds need: its feed reads a whole day)."""


@dataclass(frozen=True, slots=True)
class Cadence:
    poll_interval: float
    stale_after_setting: float | None = None  # ``[status] stale_after``, when set

    @classmethod
    def of(cls, config: Config, account: str) -> Cadence:
        return cls(config.accounts[account].poll_interval, config.status.stale_after)

    @property
    def jitter(self) -> float:
        """Spread of each poll's start, so accounts polled together drift apart."""
        return max(0.1, self.poll_interval * 0.1)

    @property
    def misfire_grace(self) -> int:
        """How late (seconds) a poll the scheduler missed may still run."""
        return max(1, int(self.poll_interval))

    @property
    def push_patience(self) -> float:
        """Seconds a poll's reads wait, in all, for the account's running pushes."""
        return STRETCH_MAX * self.poll_interval

    @property
    def echo_grace(self) -> timedelta:
        """After a confirmed push without vendor timestamps, a step back to the old state seen
        within this long is list lag: at least two polls, and never under 30 seconds."""
        return timedelta(seconds=max(30.0, 2 * self.poll_interval))

    @property
    def stale_after(self) -> timedelta:
        """No successful poll for this long makes the account not ready: three missed polls
        plus slack, unless ``[status] stale_after`` says otherwise."""
        return timedelta(seconds=self.stale_after_setting or 3 * self.poll_interval + 5)
