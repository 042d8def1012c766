from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import world


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
        # A short lease: a restarted replica waits for its predecessor's lease to expire.
        return {"url": pg.url(pg.new_database()), "lease_ttl": 2}

    world.LEDGER = pg_ledger
    try:
        yield "postgresql"
    finally:
        world.LEDGER = before
