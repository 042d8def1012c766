"""Hostile and careless config: what ``check-config`` accepts starts, what it refuses is one line.

Every case of the issues "Hostile and broken inputs" (18.5) and "Hardening" (20.6) is a row of
the table below, applied to config/syncd.example.toml and run through the real CLI: exit 2, one
line per problem naming file:line and the key path, no traceback. The edge values that are
allowed must build everything ``syncd run`` builds and schedule every job. A Hypothesis test
mutates the example at random and holds the same contract: a one-line ConfigError or a config that
builds.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from syncd import cli
from syncd import config as config_mod
from syncd.daemon import Daemon

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "config" / "syncd.example.toml").read_text().replace(
    'path = "/var/lib/syncd/ledger.db"', 'path = "ledger.db"')
ENV = {name: f"value-of-{name.lower()}-0123" for name in (
    "SYNCD_PAGERDUTY_TOKEN", "SYNCD_VO_API_ID", "SYNCD_VO_API_KEY", "SYNCD_VO_REST_KEY",
    "SYNCD_SPIKE_API_KEY", "SYNCD_SPIKE_INTEGRATION_TOKEN", "SYNCD_INCIDENTIO_API_KEY")}


@pytest.fixture(scope="module", autouse=True)
def secrets_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in ENV.items():
            mp.setenv(name, value)
        yield


def with_key(header: str, key: str, literal: str, text: str = EXAMPLE) -> str:
    """``text`` with ``key = literal`` in the table under ``header`` (replaced or added)."""
    lines = text.splitlines()
    start = lines.index(header)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")),
               len(lines))
    for i in range(start + 1, end):
        if re.match(rf"{re.escape(key)}\s*=", lines[i]):
            lines[i] = f"{key} = {literal}"
            break
    else:
        lines.insert(start + 1, f"{key} = {literal}")
    return "\n".join(lines) + "\n"


def top_level(literal_lines: str) -> str:
    """The example without its [[oncall]] and [users] tables, with top-level keys first."""
    body = EXAMPLE.split("[[oncall]]")[0]
    return literal_lines + "\n" + body


PD, VO, SP, II = ("[accounts.pagerduty]", "[accounts.splunk]", "[accounts.spike]",
                  "[accounts.incidentio]")
REFUSED = [
    # issue 18.5: nonsense that validated and failed at the first write
    ("email", with_key(PD, "from_email", '"not-an-email"'), "accounts.pagerduty.from_email",
     "email"),
    ("email-non-ascii", with_key(PD, "from_email", '"bøb@example.com"'),
     "accounts.pagerduty.from_email", "ASCII"),
    ("user-email", with_key("[users.splunk]", '"jdoe"', '"jane at example"'),
     "users.splunk.jdoe", "email"),
    ("url-credentials", with_key(PD, "base_url", '"https://me:hunter2pw@api.pagerduty.com"'),
     "accounts.pagerduty.base_url", "credentials"),
    ("url-no-scheme", with_key(VO, "base_url", '"api.victorops.com"'),
     "accounts.splunk.base_url", "https://"),
    ("url-file", with_key(SP, "base_url", '"file:///etc/passwd"'), "accounts.spike.base_url",
     "https://"),
    ("url-http-remote", with_key(II, "base_url", '"http://api.incident.io"'),
     "accounts.incidentio.base_url", "loopback"),
    ("url-newline", with_key(PD, "base_url", '"https://api.pagerduty.com\\n"'),
     "accounts.pagerduty.base_url", "control character"),
    ("url-bad-host", with_key(PD, "base_url", '"https://999.1.1.1"'),
     "accounts.pagerduty.base_url", "host"),
    ("events-url-ftp", with_key(PD, "events_url", '"ftp://events.pagerduty.com"'),
     "accounts.pagerduty.events_url", "https://"),
    ("interval-zero", with_key(PD, "poll_interval", "0"), "accounts.pagerduty.poll_interval",
     "greater than or equal"),
    ("interval-negative", with_key(VO, "poll_interval", "-5"), "accounts.splunk.poll_interval",
     "greater than or equal"),
    # issue 20.6: accepted, then failed at run time
    ("poll-inf", with_key(PD, "poll_interval", "inf"), "accounts.pagerduty.poll_interval",
     "finite"),
    ("poll-nan", with_key(PD, "poll_interval", "nan"), "accounts.pagerduty.poll_interval",
     "finite"),
    ("poll-huge", with_key(PD, "poll_interval", "1e15"), "accounts.pagerduty.poll_interval",
     "less than or equal"),
    ("oncall-inf", with_key(PD, "oncall_interval", "inf"), "accounts.pagerduty.oncall_interval",
     "finite"),
    ("oncall-huge", with_key(PD, "oncall_interval", "1e15"),
     "accounts.pagerduty.oncall_interval", "less than or equal"),
    ("log-overlap-inf", with_key(PD, "log_overlap", "inf"), "accounts.pagerduty.log_overlap",
     "finite"),
    ("change-overlap-huge", with_key(II, "change_overlap", "1e15"),
     "accounts.incidentio.change_overlap", "less than or equal"),
    ("rate-tiny", with_key(II, "rate_limit_per_minute", "1e-300"),
     "accounts.incidentio.rate_limit_per_minute", "greater than or equal"),
    ("rate-tiny-spike", with_key(SP, "rate_limit_per_minute", "1e-300"),
     "accounts.spike.rate_limit_per_minute", "greater than or equal"),
    ("budget-bool", with_key(PD, "budget_fraction", "true"), "accounts.pagerduty.budget_fraction",
     "number"),
    ("budget-tiny", with_key(PD, "budget_fraction", "1e-300"),
     "accounts.pagerduty.budget_fraction", "greater than or equal"),
    ("retries-bool", with_key(PD, "max_retries", "true"), "accounts.pagerduty.max_retries",
     "integer"),
    ("timeout-string", with_key(PD, "timeout", '"15"'), "accounts.pagerduty.timeout", "number"),
    ("enabled-int", with_key("[status]", "enabled", "1"), "status.enabled", "boolean"),
    ("id-nul", with_key(SP, "team_id", '"65a1f0c2\\u0000e4b0"'), "accounts.spike.team_id",
     "control character"),
    ("id-newline", with_key(PD, "service_id", '"PSVC\\nWEB"'), "accounts.pagerduty.service_id",
     "control character"),
    ("schedule-newline", EXAMPLE.replace('schedule = "PSCHED1"', 'schedule = "PSCHED1\\n"'),
     "oncall.0.members.0.schedule", "control character"),
    ("listen-bad-ip", with_key("[status]", "listen", '"999.1.1.1:9797"'), "status.listen",
     "host"),
    ("listen-v6-unbracketed", with_key("[status]", "listen", '"::1:9797"'), "status.listen",
     "brackets"),
    ("ledger-path-long", with_key("[ledger]", "path", '"' + "x" * 300 + '.db"'), "ledger.path",
     "255"),
    ("ledger-path-very-long", with_key("[ledger]", "path", '"' + "abc/" * 1100 + 'l.db"'),
     "ledger.path", "4095"),
    ("ledger-url-garbage", with_key("[ledger]", "url", '"not a url"'), "ledger.url",
     "database URL"),
    ("ledger-url-unknown", with_key("[ledger]", "url", '"nosuchdb://host/x"'), "ledger.url",
     "does not know"),
    ("oncall-int", top_level("oncall = 5"), "oncall", "array of tables"),
    ("users-int", top_level("users = 5"), "users", "table"),
    ("secret-newline", with_key(PD, "token", '"tok-with\\nnewline"'), "accounts.pagerduty.token",
     "control character"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_refused_with_one_line(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = tmp_path / "syncd.toml"
    path.write_text(text)
    result = CliRunner().invoke(cli.app, ["check-config", "-c", str(path)])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = [line for line in result.stderr.splitlines() if not line.startswith(
        "syncd: warning:")]
    assert len(lines) == 1, lines
    assert re.match(rf"syncd: {re.escape(str(path))}:\d+: {re.escape(key)}: ", lines[0]), lines
    assert fragment in lines[0], lines
    assert "Traceback" not in result.stdout + result.stderr
    for secret in ("hunter2pw", "pg-secret-pw", "tok-with", *ENV.values()):
        assert secret not in result.stdout + result.stderr


def test_a_postgresql_url_is_accepted_and_its_password_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "syncd.toml"
    path.write_text(with_key("[ledger]", "url",
                             '"postgresql+psycopg://syncd:pg-secret-pw@db.invalid/s"'))
    for args in (["check-config", "-c", str(path)], ["check-config", "-c", str(path), "--json"]):
        result = CliRunner().invoke(cli.app, args)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        assert "pg-secret-pw" not in result.stdout + result.stderr
        assert "db.invalid" not in result.stdout or "***" in result.stdout


EDGES = [
    ("slowest", with_key(PD, "poll_interval", "86400", with_key(
        PD, "oncall_interval", "86400", with_key(PD, "full_resync_interval", "604800")))),
    ("loopback-http", with_key(VO, "base_url", '"http://127.0.0.1:8080"',
                               with_key(SP, "base_url", '"http://[::1]:8081"',
                                        with_key(II, "base_url", '"http://ii.localhost:8082"')))),
    ("smallest-budgets", with_key(II, "rate_limit_per_minute", "1", with_key(
        SP, "rate_limit_per_minute", "1", with_key(PD, "budget_fraction", "0.01")))),
    ("ints-for-floats", with_key(PD, "timeout", "300", with_key(VO, "budget_fraction", "1"))),
    ("listen-v6", with_key("[status]", "listen", '"[::1]:9797"')),
]


@pytest.mark.parametrize("text", [c[1] for c in EDGES], ids=[c[0] for c in EDGES])
def test_accepted_edges_build_and_schedule(tmp_path: Path, text: str) -> None:
    path = tmp_path / "syncd.toml"
    path.write_text(text)
    result = CliRunner().invoke(cli.app, ["check-config", "-c", str(path)])
    assert result.exit_code == 0, result.stderr
    structlog.reset_defaults()  # the CLI logged to CliRunner's stream, closed by now
    cfg = config_mod.load(path)
    build_and_schedule(cfg)


def build_and_schedule(cfg: config_mod.Config) -> None:
    """What ``syncd run`` does before it serves: clients, ledger, every scheduled job."""
    daemon = Daemon.build(cfg)
    try:
        daemon.schedule()
        now = datetime.now(UTC)
        for job in daemon.scheduler.get_jobs():
            job.trigger.get_next_fire_time(None, now)
    finally:
        anyio.run(daemon.engine.aclose)
        daemon.ledger.dispose()


# ------------------------------------------------------------------------- random mutations

KEY_LINE = re.compile(r"^([A-Za-z_\"][\w\"-]*)\s*=")
KEYS = {i: m.group(1) for i, line in enumerate(EXAMPLE.splitlines())
        if (m := KEY_LINE.match(line))}
HOSTILE = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "1e15", "1e-300", "-1", "0", "true", "false",
                     "99999999999999999", '""', '"file:///etc/passwd"', '"api.example.com"',
                     '"http://example.com"', '"https://u:p@example.com"', '"a\\u0000b"',
                     '"x\\ny"', '"bøb@example.com"', '"999.1.1.1:1"', "[]", "{}", "[1, 2]",
                     '{ a = 1 }', '"sqlite:///"', '"postgresql://u:p@h/d"', '"env:"',
                     '"env:SYNCD_UNSET_FOR_SURE"', '"credential:x"', '"prefer:ghost"',
                     '"from:ghost"', '"mirror"']),
    st.integers(min_value=-2**63, max_value=2**63 - 1).map(str),
    st.floats(allow_nan=False).map(lambda f: repr(f) if f == f and abs(f) != float("inf")
                                   else "inf"),
    st.text(st.characters(codec="utf-8", exclude_characters='"\\'), max_size=12).map(
        lambda s: f'"{s}"'),
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = EXAMPLE.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.sampled_from(sorted(KEYS)))
        key = KEYS[i]
        op = draw(st.sampled_from(["value", "value", "value", "delete", "unknown"]))
        if op == "value":
            lines[i] = f"{key} = {draw(HOSTILE)}"
        elif op == "delete":
            lines[i] = "# deleted"
        else:
            lines[i] = f"{key}x = {draw(HOSTILE)}"
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=mutated())
def test_random_mutations_error_in_one_line_or_build(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "syncd.toml"
        path.write_text(text)
        try:
            cfg = config_mod.load(path)
            config_mod.preflight(cfg)
        except config_mod.ConfigError as exc:
            assert exc.lines
            for line in exc.lines:
                assert "\n" not in line and line.startswith(str(path)), line
            return
        build_and_schedule(cfg)
