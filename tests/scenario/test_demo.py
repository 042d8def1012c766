"""The README's first command: ``syncd demo`` runs its story to a converged summary."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_to_its_summary() -> None:
    proc = subprocess.run([sys.executable, "-m", "syncd", "demo", "--speed", "0.2"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo summary:" in proc.stdout
    assert "result: converged" in proc.stdout
    assert "every tool agrees" in proc.stdout
