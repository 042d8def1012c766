"""Spike.sh-only contract check: every tolerated spec deviation is still needed. The contract every
simulator shares (responses against the spec, auth, paging, rate-limit answer, control surface)
is tests/vendors/test_contract.py with this vendor's kit, spike_kit.py."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from spike_kit import DEVIATIONS, load_spec


@pytest.fixture(scope="session")
def specs(vendor_specs: Any) -> Any:
    return load_spec(vendor_specs)


def test_deviations_are_needed(specs: dict[str, Any]) -> None:
    """Each patch must change its spec; a stale entry would silently relax nothing."""
    for target, patch, reason in DEVIATIONS:
        raw = copy.deepcopy(specs[target][0])
        before = json.dumps(raw, sort_keys=True)
        patch(raw)
        assert json.dumps(raw, sort_keys=True) != before, reason
