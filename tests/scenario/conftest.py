from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import world

from syncd.config import MIN_LEASE_TTL


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a scenario module against both ledgers (``pytestmark =
    pytest.mark.usefixtures("any_ledger")``): new worlds (and :func:`ledger_table`) get a
    fresh PostgreSQL database each under the ``postgresql`` parameter."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    pg = request.getfixturevalue("postgres")
    before = world.LEDGER

    def pg_ledger(tmp: Path) -> dict[str, Any]:
        # The shortest lease (a restarted replica waits for its predecessor's to expire).
        return {"url": pg.url(pg.new_database()), "lease_ttl": MIN_LEASE_TTL}

    world.LEDGER = pg_ledger
    try:
        yield "postgresql"
    finally:
        world.LEDGER = before
