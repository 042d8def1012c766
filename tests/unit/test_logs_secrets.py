"""Secrets: resolution, clear errors without the value, and redaction from every log event."""

from __future__ import annotations

import io
import json
import logging
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


def test_redact_knows_escaped_forms_and_url_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_T_ODD", 'odd/key"value+1')
    secrets.resolve("env:SYNCD_T_ODD")
    secrets.register_url("postgresql://syncd:pg%2Fpass-77@db.example/syncd")
    text = secrets.redact({"body": ['{"h": "odd/key\\"value+1"}', "k=odd%2Fkey%22value%2B1",
                                    "pg/pass-77", "mysql://root:other-pw@h/x"]})
    assert text == {"body": ['{"h": "[REDACTED]"}', "k=[REDACTED]", "[REDACTED]",
                             "mysql://root:***@h/x"]}
    assert secrets.safe_url("postgresql://syncd:pw@db:5432/s") == "postgresql://***@db:5432/s"
    assert secrets.safe_url("sqlite:////var/lib/syncd/ledger.db") == (
        "sqlite:////var/lib/syncd/ledger.db")


def test_vendor_error_text_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from syncd.vendors.base import PermanentError

    monkeypatch.setenv("SYNCD_T_VENDOR", "vendor-key-4711")
    secrets.resolve("env:SYNCD_T_VENDOR")
    error = PermanentError("echo: Authorization: Token token=vendor-key-4711", account="pd",
                           endpoint="PUT /incidents", status=400)
    assert "vendor-key-4711" not in str(error) + error.message + repr(error.args)


def test_console_tracebacks_are_redacted_and_show_no_locals(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_T_CONSOLE", "console-key-31337")
    key = secrets.resolve("env:SYNCD_T_CONSOLE")
    local_copy = "local-only-" + key[::-1]  # in a frame's locals, never in any message
    stream = io.StringIO()
    logs.configure("info", "console", stream=stream)
    try:
        raise RuntimeError(f"request with {key} failed ({len(local_copy)})")
    except RuntimeError:
        structlog.get_logger("test").exception("failed")
    structlog.reset_defaults()
    text = stream.getvalue()
    assert "Traceback" in text and "RuntimeError" in text and "[REDACTED]" in text
    assert key not in text and local_copy not in text


def test_stdlib_records_with_tracebacks_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn and apscheduler log through the stdlib; their tracebacks are redacted too."""
    monkeypatch.setenv("SYNCD_T_STDLIB", "stdlib-key-2718")
    secrets.resolve("env:SYNCD_T_STDLIB")
    for fmt in ("json", "console"):
        stream = io.StringIO()
        logs.configure("info", fmt, stream=stream)  # type: ignore[arg-type]
        try:
            raise ValueError("header stdlib-key-2718")
        except ValueError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        text = stream.getvalue()
        assert "Exception in ASGI application" in text and "ValueError" in text
        assert "stdlib-key-2718" not in text and "[REDACTED]" in text
    structlog.reset_defaults()


@pytest.mark.parametrize("value", ["JSON", " json "])
def test_log_format_variable_is_read_like_the_config_key(value: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``Environment=SYNCD_LOG_FORMAT=JSON`` in a unit drop-in gave the console renderer in
    the journal, silently: the variable is case-insensitive, as the operator means it."""
    monkeypatch.setenv("SYNCD_LOG_FORMAT", value)
    stream = io.StringIO()
    logs.configure("info", "console", stream=stream)
    structlog.get_logger("t").info("hello")
    assert json.loads(stream.getvalue().splitlines()[-1])["event"] == "hello"


def test_unknown_log_format_variable_is_said_not_silently_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A value that is no format keeps the config's and says so once, in that format."""
    monkeypatch.setenv("SYNCD_LOG_FORMAT", "jsno")
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    first = json.loads(stream.getvalue().splitlines()[0])
    assert first["event"] == "logging.format_ignored" and first["value"] == "jsno"
