"""Secrets: resolution, clear errors without the value, and redaction from every log event."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from syncd import logs, secrets


def test_env_file_and_credential_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setenv("SYNCD_T_TOKEN", "tok-from-env")
    assert secrets.resolve("env:SYNCD_T_TOKEN") == "tok-from-env"
    (tmp_path / "key").write_text("tok-from-file\n")
    assert secrets.resolve(f"file:{tmp_path / 'key'}") == "tok-from-file"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert secrets.resolve("credential:key") == "tok-from-file"


def test_literal_secret_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    assert secrets.resolve("literal-value-123", warnings=warnings, where="accounts.pd.token")
    assert "accounts.pd.token" in warnings[0] and "literal-value-123" not in warnings[0]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("env:SYNCD_T_MISSING", "SYNCD_T_MISSING is not set"),
        ("file:/nonexistent/key", "does not exist"),
        ("credential:key", "CREDENTIALS_DIRECTORY is not set"),
    ],
)
def test_unresolvable_references(ref: str, message: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCD_T_MISSING", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(secrets.SecretError, match=message):
        secrets.resolve(ref)


def test_unreadable_secret_file(tmp_path: Path) -> None:
    with pytest.raises(secrets.SecretError, match="is a directory"):
        secrets.resolve(f"file:{tmp_path}")


def test_secret_is_redacted_from_every_log_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_T_SECRET", "s3cr3t-token-value")
    secrets.resolve("env:SYNCD_T_SECRET")
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    log = structlog.get_logger("test")
    log.info("calling vendor", header="Token token=s3cr3t-token-value",
             nested={"list": ["x s3cr3t-token-value y"]})
    try:
        raise RuntimeError("boom with s3cr3t-token-value inside")
    except RuntimeError:
        log.exception("failed")
    text = stream.getvalue()
    assert "s3cr3t-token-value" not in text
    events = [json.loads(line) for line in text.splitlines()]
    assert events[0]["header"] == "Token token=[REDACTED]"
    assert "[REDACTED]" in events[1]["exception"]
    structlog.reset_defaults()
