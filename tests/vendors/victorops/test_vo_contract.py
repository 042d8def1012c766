"""Splunk On-Call-only contract checks: the simulator's per-endpoint limit tables match the limits
the 2020 (0.0.3) and 2018 (0.0.2) specs state. The contract every simulator shares (responses
against the spec, auth, paging, rate-limit answer, control surface) is tests/vendors/
test_contract.py with this vendor's kit, vo_kit.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from vo_kit import load_spec


@pytest.fixture(scope="session")
def spec(vendor_specs) -> dict[str, Any]:
    return load_spec(vendor_specs)


def test_spec_rate_limits_match_the_2020_table(spec) -> None:
    import re

    from syncd.simulators.victorops import LIMITS_2020
    for endpoint, per_minute in LIMITS_2020.items():
        method, path = endpoint.split(" ", 1)
        op = spec["paths"].get(path, {}).get(method.lower())
        if op is None:
            assert path == "/api-public/v2/user"  # not in the spec (DEVIATIONS)
            continue
        text = op.get("description", "")
        m = re.search(r"maximum of (\d+) times per minute", text)
        stated = int(m.group(1)) if m else (1 if "once a minute" in text else None)
        assert stated == per_minute, endpoint


def test_2018_spec_limits_match_the_2018_table(vendor_specs) -> None:
    import re

    from syncd.simulators.victorops import LIMITS_2018
    with open(vendor_specs / "victorops" / "victorops-api-v1.v0.0.2-2018.yaml") as f:
        old = yaml.safe_load(f)
    checked = 0
    for endpoint, per_minute in LIMITS_2018.items():
        method, path = endpoint.split(" ", 1)
        op = old["paths"].get(path, {}).get(method.lower())
        text = (op or {}).get("description", "")
        m = re.search(r"maximum of (\d+) times per minute", text)
        stated = int(m.group(1)) if m else (1 if "once a minute" in text else None)
        if stated is not None:
            assert stated == per_minute, endpoint
            checked += 1
    assert checked >= 15
