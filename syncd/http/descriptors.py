"""How many file descriptors syncd asks for, and how many the status server may hold (see
:mod:`syncd.http.guard` for why). Apart from the guard itself so that the daemon can reserve its
descriptors without loading uvicorn when the status server is off."""

from __future__ import annotations

import resource

MAX_CONNECTIONS = 256
NOFILE_TARGET = 65536
"""The soft descriptor limit syncd asks for at start (bounded by the hard limit)."""


def reserve_descriptors(target: int = NOFILE_TARGET) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to ``min(target, hard)``; returns (soft, hard) in force.
    Never fails: a sandbox that forbids setrlimit keeps the limit it gave."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (OSError, ValueError):
            pass
    return soft, hard


def connection_cap(soft_limit: int | None = None) -> int:
    """Connections the status server may hold: a quarter of the descriptors, at most
    :data:`MAX_CONNECTIONS`."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft_limit // 4))
