"""Fixtures every test package shares."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

sys.path.insert(0, str(Path(__file__).parent))  # pgserver, for every test package

import pgserver

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[pgserver.PgServer]:
    """One real PostgreSQL server for the whole run, or per pytest-xdist worker (initdb +
    pg_ctl in a temporary directory); tests take a database each (:func:`pg_url`). Without
    PostgreSQL binaries the tests skip, except in CI ($CI set), which must run them."""
    reason = pgserver.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run the PostgreSQL tests: run scripts/install as root)")
        pytest.skip(reason)
    yield pgserver.server()


@pytest.fixture
def pg_url(postgres: pgserver.PgServer) -> str:
    """The URL of a new, empty PostgreSQL database (password in the URL)."""
    return postgres.url(postgres.new_database())


def vendor_specs_dir() -> Path | None:
    """``../shared/vendor-specs`` beside the checkout (CI always has it), or $SYNCD_VENDOR_SPECS."""
    configured = os.environ.get("SYNCD_VENDOR_SPECS")
    path = Path(configured) if configured else ROOT.parent / "shared" / "vendor-specs"
    return path if path.is_dir() else None


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Logging as it was before the test: the CLI (in-process through typer's CliRunner) and
    tests configure logging onto streams that are closed once the test is over."""
    handlers = logging.getLogger().handlers[:]
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers


@pytest.fixture(scope="session")
def vendor_specs() -> Path:
    path = vendor_specs_dir()
    if path is None:
        pytest.skip(
            "vendor specs not found: contract tests read the official specs from "
            "../shared/vendor-specs (or $SYNCD_VENDOR_SPECS); they are not copied into this repo"
        )
    return path


# CI runs the property tests with a fixed derivation of examples (reproducible verdicts); a
# developer's run explores new random examples each time.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")
