"""Config loading: the example file, and every kind of bad input as one precise line."""

from __future__ import annotations

import random
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from syncd import config, vendors
from syncd.engine.oncall import identify

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "syncd.example.toml"
DEMO = ROOT / "config" / "demo.toml"

GOOD = """
[ledger]
path = "ledger.db"

[accounts.vo]
vendor = "victorops"
api_id = "env:T_VO_ID"
api_key = "env:T_VO_KEY"

[accounts.sp]
vendor = "spike"
api_key = "env:T_SP_KEY"
team_id = "65a1f0c2e4b0a1b2c3d4e5f6"

[[sync]]
name = "main"
accounts = ["vo", "sp"]
"""


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("T_VO_ID", "T_VO_KEY", "T_SP_KEY", "SYNCD_PAGERDUTY_TOKEN",
                 "SYNCD_VO_API_ID", "SYNCD_VO_API_KEY", "SYNCD_VO_REST_KEY",
                 "SYNCD_SPIKE_API_KEY", "SYNCD_SPIKE_INTEGRATION_TOKEN",
                 "SYNCD_INCIDENTIO_API_KEY"):
        monkeypatch.setenv(name, f"value-of-{name.lower()}")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, text))
    return info.value.lines


def test_good_config(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, GOOD))
    assert cfg.ledger_url == f"sqlite:///{tmp_path / 'ledger.db'}"
    assert cfg.accounts["vo"].api_id.get_secret_value() == "value-of-t_vo_id"
    assert "value-of" not in repr(cfg.accounts["vo"])
    assert cfg.sync[0].mode == "correlate" and cfg.warnings == ()


def test_example_config_loads_and_documents_every_key() -> None:
    missing = [v for v in vendors.VENDORS if v not in _available()]
    if missing:
        pytest.skip(f"vendor clients not in this build yet: {missing}")
    cfg = config.load(EXAMPLE)
    assert set(cfg.accounts) == {"pagerduty", "splunk", "spike", "incidentio"}
    text = EXAMPLE.read_text()
    for name, settings in cfg.accounts.items():
        section = text.split(f"[accounts.{name}]", 1)[1].split("\n[", 1)[0]
        for key in type(settings).model_fields:
            assert re.search(rf"^#?\s*{key}\s*=", section, re.M) or key in text.split(
                "Keys every account takes:")[1].split("----")[0], f"{name}.{key} undocumented"


def _available() -> list[str]:
    found = []
    for name in vendors.VENDORS:
        try:
            vendors.load(name)
        except ModuleNotFoundError:
            continue
        found.append(name)
    return found


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    lines = problems(tmp_path, GOOD + "\n[accounts.x\n")
    assert len(lines) == 1
    assert str(tmp_path / "syncd.toml") in lines[0] and "line" in lines[0]


def test_unknown_key_names_key_path_and_line(tmp_path: Path) -> None:
    """A typo of a field is named, with the field it is a typo of; any other unknown key is
    pointed at by its line only (it may be a pasted secret)."""
    text = GOOD.replace('team_id = "', 'tem_id = "x"\nteam_id = "')
    lines = problems(tmp_path, text)
    assert lines == [f"{tmp_path / 'syncd.toml'}:13: accounts.sp.tem_id: unknown key "
                     "(did you mean team_id?)"]
    lines = problems(tmp_path, GOOD.replace('team_id = "', 'colour = "x"\nteam_id = "'))
    assert lines == [f"{tmp_path / 'syncd.toml'}:13: accounts.sp.(a key on this line): unknown "
                     "key (not named, as it may be a pasted secret)"]


def test_wrong_type(tmp_path: Path) -> None:
    lines = problems(tmp_path, GOOD.replace('path = "ledger.db"',
                                            'path = "ledger.db"\nbusy_timeout = "soon"'))
    assert len(lines) == 1
    assert re.match(rf"{re.escape(str(tmp_path))}/syncd.toml:4: ledger.busy_timeout: ", lines[0])


def test_missing_env_variable_does_not_echo_anything_secret(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.delenv("T_VO_KEY")
    lines = problems(tmp_path, GOOD)
    assert lines == [f"{tmp_path / 'syncd.toml'}:8: accounts.vo.api_key: "
                     "environment variable T_VO_KEY is not set"]


def test_unreadable_file_secret(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.mkdir()
    lines = problems(tmp_path, GOOD.replace('"env:T_SP_KEY"', f'"file:{secret}"'))
    assert len(lines) == 1 and "accounts.sp.api_key" in lines[0] and "is a directory" in lines[0]


def test_literal_secret_warns(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, GOOD.replace('"env:T_SP_KEY"', '"plain-key-1234"')))
    assert len(cfg.warnings) == 1 and "accounts.sp.api_key" in cfg.warnings[0]
    assert "plain-key-1234" not in cfg.warnings[0]


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace('vendor = "spike"', 'vendor = "spik"') + (
        '\n[[sync]]\nname = "x"\naccounts = ["vo", "nope"]\nmode = "mirror"\n'
    )
    lines = problems(tmp_path, text)
    assert any("accounts.sp.vendor: unknown vendor 'spik'" in line for line in lines)
    assert any("sync.1: mirror mode needs source" in line for line in lines)


def test_sync_group_must_name_known_accounts(tmp_path: Path) -> None:
    lines = problems(tmp_path, GOOD.replace('accounts = ["vo", "sp"]',
                                            'accounts = ["vo", "ghost"]'))
    assert lines == [f"{tmp_path / 'syncd.toml'}:17: sync.0.accounts.1: "
                     "no [accounts.ghost] section"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (GOOD + "\n[bogus]\n", "(a key on this line): unknown key"),
        (GOOD.replace('path = "ledger.db"', 'path = "ledger.db"\nsize = 3'),
         "ledger.(a key on this line): unknown key"),
        (GOOD + '\n[status]\nlisten = "nowhere"\n', "status.listen: expected host:port"),
    ],
)
def test_cli_check_config_fails_with_one_line(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "syncd", "check-config", "-c", str(path)],
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 2
    err_lines = [line for line in proc.stderr.splitlines() if line]
    assert len(err_lines) == 1 and needle in err_lines[0] and str(path) in err_lines[0]


def test_cli_check_config_ok(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "syncd", "check-config", "-c",
                           str(write(tmp_path, GOOD))], capture_output=True, text=True,
                          env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK: ") and "value-of" not in proc.stdout + proc.stderr


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_every_duration_follows_from_poll_interval(tmp_path: Path) -> None:
    from datetime import timedelta

    from syncd.engine.cadence import Cadence

    text = GOOD.replace('vendor = "victorops"', 'vendor = "victorops"\npoll_interval = 60')
    cfg = config.load(write(tmp_path, text))
    slow, fast = Cadence.of(cfg, "vo"), Cadence.of(cfg, "sp")
    assert (slow.poll_interval, fast.poll_interval) == (60, 30)
    assert (slow.echo_grace, fast.echo_grace) == (timedelta(seconds=120), timedelta(seconds=60))
    assert (slow.stale_after, fast.stale_after) == (timedelta(seconds=185),
                                                    timedelta(seconds=95))
    assert (slow.jitter, slow.misfire_grace) == (6.0, 60)
    assert Cadence(0.3).echo_grace == timedelta(seconds=30)
    cfg = config.load(write(tmp_path, "[status]\nstale_after = 10\n" + GOOD))
    assert Cadence.of(cfg, "vo").stale_after == timedelta(seconds=10)


PD = """
[accounts.pd]
vendor = "pagerduty"
token = "env:SYNCD_PAGERDUTY_TOKEN"
from_email = "syncd-bot@example.com"
"""


@pytest.mark.parametrize(("line", "key", "message"), [
    ('from_email = "not-an-email"', "from_email", "expected an ASCII email address"),
    ('from_email = "jörg@example.com"', "from_email", "expected an ASCII email address"),
    ('base_url = "https://bot:hunter2@api.pagerduty.com"', "base_url", "must not carry "
     "credentials"),
    ('base_url = "api.pagerduty.com"', "base_url", "must start with https://"),
    ('base_url = "http://api.pagerduty.com"', "base_url", "http:// is only allowed for a "
     "loopback host"),
    ("poll_interval = 0", "poll_interval", "greater than or equal to 0.01"),
    ("poll_interval = inf", "poll_interval", "finite number"),
    ("oncall_interval = 1e15", "oncall_interval", "less than or equal to 86400"),
    ("budget_fraction = true", "budget_fraction", "valid number"),
])
def test_emails_urls_and_intervals_are_checked(tmp_path: Path, line: str, key: str,
                                               message: str) -> None:
    table = PD if key != "from_email" else PD.replace('from_email = "syncd-bot@example.com"\n', "")
    text = GOOD + table + line + "\n"
    lines = problems(tmp_path, text)
    number = text.splitlines().index(line) + 1
    assert len(lines) == 1
    assert lines[0].startswith(f"{tmp_path / 'syncd.toml'}:{number}: accounts.pd.{key}: ")
    assert message in lines[0]
    assert "hunter2" not in lines[0]


def test_loopback_http_and_the_largest_intervals_are_fine(tmp_path: Path) -> None:
    text = GOOD + PD + 'base_url = "http://127.0.0.1:8080"\npoll_interval = 86400\n'
    cfg = config.load(write(tmp_path, text))
    config.preflight(cfg)
    assert cfg.accounts["pd"].poll_interval == 86400


def test_oncall_and_users_of_the_wrong_shape(tmp_path: Path) -> None:
    lines = problems(tmp_path, "oncall = 5\nusers = 5\n" + GOOD)
    assert lines == [f"{tmp_path / 'syncd.toml'}:1: oncall: expected [[oncall]] array of tables",
                     f"{tmp_path / 'syncd.toml'}:2: users: expected a [users.ACCOUNT] table per "
                     "account"]


def test_user_email_keys_are_lower_cased_once_at_load(tmp_path: Path) -> None:
    """A ``[users.X]`` key holding an email is stored lower-cased (and stripped), so the on-call
    matching finds it by a plain lookup whatever case the vendor reports; a vendor user id is
    kept as written (ids are case-sensitive)."""
    cfg = config.load(write(tmp_path, GOOD + '\n[users.vo]\n" Bob@Corp.Example" = '
                            '"bob@example.com"\nPABC12 = "carol@example.com"\n'))
    assert cfg.users == {"vo": {"bob@corp.example": "bob@example.com",
                                "PABC12": "carol@example.com"}}
    assert identify(cfg.users, "vo", "U7", "BOB@corp.example") == "bob@example.com"
    assert identify(cfg.users, "vo", "pabc12", None) is None


def test_user_email_keys_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    """Two entries for one email (written in two cases) would silently drop one of them: the
    later one is refused, at its own line, naming the first."""
    text = GOOD + ('\n[users.vo]\n"bob@corp.example" = "bob@example.com"\n'
                   'alice = "alice@example.com"\n"Bob@Corp.example" = "robert@example.com"\n')
    number = text.splitlines().index('"Bob@Corp.example" = "robert@example.com"') + 1
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'syncd.toml'}:{number}: users.vo.Bob@Corp.example: the same email as "
        "'bob@corp.example' (emails match whatever their case): keep one entry"]


def test_check_config_never_prints_a_ledger_password(tmp_path: Path) -> None:
    """Without the PostgreSQL driver the URL cannot be built (one line); with it, the summary
    shows the URL without its userinfo. Either way the password never appears."""
    text = GOOD.replace('path = "ledger.db"',
                        'url = "postgresql+psycopg://syncd:pg-pass-0815@db.invalid/syncd"')
    path = write(tmp_path, text)
    for extra in ([], ["--json"]):
        proc = subprocess.run([sys.executable, "-m", "syncd", "check-config", "-c", str(path),
                               *extra], capture_output=True, text=True, env=_env())
        assert "pg-pass-0815" not in proc.stdout + proc.stderr
        if proc.returncode == 2:
            assert proc.stderr.count("\n") == 1 and "ledger.url: the ledger cannot be opened" \
                in proc.stderr
        else:
            assert proc.returncode == 0 and "postgresql+psycopg://***@db.invalid/syncd" in (
                proc.stdout)



def oncall_table(name: str, vo_schedule: str, sp_schedule: str, extra: str = "") -> str:
    """One [[oncall]] mapping of the GOOD accounts, ``extra`` appended to its last member."""
    return (f'\n[[oncall]]\nname = "{name}"\n'
            f'[[oncall.members]]\naccount = "vo"\nschedule = "{vo_schedule}"\n'
            f'[[oncall.members]]\naccount = "sp"\nschedule = "{sp_schedule}"\n{extra}')


ONCALL_TWO = GOOD + oncall_table("web", "team-web", "S1") + oncall_table(
    "db", "team-db", "S2", "level = 11\n")


def test_oncall_member_problem_names_its_own_line(tmp_path: Path) -> None:
    """A key in the second mapping's second [[oncall.members]] is on its own line, not on the
    first [[oncall]] header: TOML appends [[a.b]] to the last [[a]], so member indices restart
    in every mapping."""
    lines = problems(tmp_path, ONCALL_TWO)
    number = ONCALL_TWO.splitlines().index("level = 11") + 1
    assert lines == [f"{tmp_path / 'syncd.toml'}:{number}: oncall.1.members.1.level: "
                     "Input should be less than or equal to 10"]


def test_duplicate_names_are_refused_at_the_second_name(tmp_path: Path) -> None:
    """Two [[oncall]] mappings with one name would collapse into one (status, repairs and
    history look mappings up by name), so they are refused like two [[sync]] groups; both point
    at the line of the second name."""
    text = (GOOD + '\n[[sync]]\nname = "main"\naccounts = ["vo", "sp"]\n'
            + oncall_table("web", "team-web", "S1") + oncall_table("web", "team-db", "S2"))
    rows = text.splitlines()
    sync_line = rows.index('name = "main"', rows.index('name = "main"') + 1) + 1
    oncall_line = rows.index('name = "web"', rows.index('name = "web"') + 1) + 1
    path = tmp_path / "syncd.toml"
    assert problems(tmp_path, text) == [
        f"{path}:{sync_line}: sync.1.name: another [[sync]] group is named 'main'",
        f"{path}:{oncall_line}: oncall.1.name: another [[oncall]] mapping is named 'web'",
    ]


def test_preflight_refuses_a_ledger_directory_run_cannot_use(tmp_path: Path) -> None:
    """``run`` refuses a SQLite ledger whose directory is missing; check-config (preflight)
    must refuse it too, naming the key and its line, or what it accepts would not start."""
    text = GOOD.replace('path = "ledger.db"', 'path = "missing/ledger.db"')
    cfg = config.load(write(tmp_path, text))
    with pytest.raises(config.ConfigError) as info:
        config.preflight(cfg)
    assert info.value.lines == [f"{tmp_path / 'syncd.toml'}:3: ledger.path: the ledger cannot "
                                f"be opened: ledger directory {tmp_path / 'missing'} does not "
                                "exist"]


def test_a_key_given_twice_names_the_file_line_and_key(tmp_path: Path) -> None:
    """tomllib says "Cannot overwrite a value (at line N, column M)"; the error starts with
    file:line like every other config error and names the key standing there."""
    again = 'team_id = "65a1f0c2e4b0a1b2c3d4e5f7"'
    text = GOOD.replace('team_id = "65a1f0c2e4b0a1b2c3d4e5f6"',
                        'team_id = "65a1f0c2e4b0a1b2c3d4e5f6"\n' + again)
    number = text.splitlines().index(again) + 1
    lines = problems(tmp_path, text)
    assert len(lines) == 1
    assert lines[0].startswith(f"{tmp_path / 'syncd.toml'}:{number}: accounts.sp.team_id: "
                               "invalid TOML: Cannot overwrite a value"), lines


def test_check_config_json_answers_json_when_refused(tmp_path: Path) -> None:
    """``check-config --json`` is for scripts: a refused config is {"ok": false, "problems"}
    on stdout (and the lines on stderr), not an empty stdout that no JSON parser reads."""
    import json

    path = write(tmp_path, GOOD.replace('path = "ledger.db"', 'pth = "ledger.db"'))
    proc = subprocess.run([sys.executable, "-m", "syncd", "check-config", "-c", str(path),
                           "--json"], capture_output=True, text=True, env=_env())
    assert proc.returncode == 2
    problem = f"{path}:3: ledger.pth: unknown key (did you mean path?)"
    assert json.loads(proc.stdout) == {"ok": False, "config": str(path), "problems": [problem]}
    assert proc.stderr == f"syncd: {problem}\n"


@pytest.mark.parametrize("url", [
    # libpq takes a password with a raw "/" (SQLAlchemy parses up to the last "@")
    "postgresql+psycopg://syncd:pg/pass-0815@127.0.0.1:9/syncd",
    # and one given as a query parameter
    "postgresql+psycopg://syncd@127.0.0.1:9/syncd?password=pg-pass-0815",
])
def test_a_ledger_password_sqlalchemy_reads_is_never_printed(tmp_path: Path, url: str) -> None:
    """Whatever SQLAlchemy takes for the password is a secret: check-config (text and JSON)
    and status (its error) never print it, in whole or in part."""
    pytest.importorskip("psycopg")
    path = write(tmp_path, GOOD.replace('path = "ledger.db"', f'url = "{url}"'))
    for args in (["check-config"], ["check-config", "--json"], ["status"]):
        proc = subprocess.run([sys.executable, "-m", "syncd", *args, "-c", str(path)],
                              capture_output=True, text=True, env=_env())
        assert "pass-0815" not in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)
        assert "127.0.0.1:9/syncd" in proc.stdout + proc.stderr


def test_a_table_declared_only_by_its_subtable_is_located(tmp_path: Path) -> None:
    """``[accounts.sp.severity_map]`` without ``[accounts.sp]`` (a header typed one level too
    deep) declares accounts.sp implicitly: its missing vendor is reported at that header."""
    text = GOOD.replace("[accounts.sp]\nvendor", "[accounts.sp.severity_map]\nvendor")
    number = text.splitlines().index("[accounts.sp.severity_map]") + 1
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'syncd.toml'}:{number}: accounts.sp.vendor: missing (one of "
        "pagerduty, victorops, incidentio, spike)"]


def test_a_key_pasted_after_env_is_not_echoed(tmp_path: Path) -> None:
    """``token = "env:u+PASTED..."`` (the key itself pasted where the variable name goes) is
    not set, and it does not look like a variable name: the error says so without the name,
    which is most likely the secret. A plain variable name is still named."""
    text = GOOD.replace('api_key = "env:T_VO_KEY"', 'api_key = "env:u+pasted-key-0815"')
    hidden = (f"{tmp_path / 'syncd.toml'}:8: accounts.vo.api_key: the environment variable "
              "env: names is not set (its name is not shown: it does not look like a variable "
              "name, so it may be the secret itself)")
    assert problems(tmp_path, text) == [hidden]
    # PagerDuty's own key shape fits a shell variable's name, not a conventional one.
    text = GOOD.replace('api_key = "env:T_VO_KEY"', 'api_key = "env:y_NbAkKc66ryYTWUXYEu"')
    assert problems(tmp_path, text) == [hidden]


@pytest.mark.parametrize("ttl", ["1", "3", "5.9"])
def test_a_lease_ttl_below_the_minimum_is_refused_naming_key_and_line(
        tmp_path: Path, ttl: str) -> None:
    """At 3 s a renewal that waited behind one of the leader's transactions landed after the
    leader's local deadline (docs/ha.md); 6 s is the shortest lease."""
    text = GOOD.replace('path = "ledger.db"\n', f'path = "ledger.db"\nlease_ttl = {ttl}\n')
    [line] = problems(tmp_path, text)
    assert line.startswith(f"{tmp_path / 'syncd.toml'}:4: ledger.lease_ttl: is below 6 s")
    text = GOOD.replace('path = "ledger.db"\n', 'path = "ledger.db"\nlease_ttl = 6\n')
    assert config.load(write(tmp_path, text)).ledger.lease_ttl == config.MIN_LEASE_TTL == 6


PD_KEY = "y_NbAkKc66ryYTWUXYEu"
"""A PagerDuty-key-shaped token, pasted where it does not belong in the tests below."""


@pytest.mark.parametrize("pasted", [
    PD_KEY,  # alone on its line
    f"{PD_KEY}=",  # a base64 key's padding reads as "KEY ="
    f"{PD_KEY} = ",
    f'"{PD_KEY}" = ',
    f"{PD_KEY}.x = ",
    f"api_key = {PD_KEY}",  # unquoted
    f"[{PD_KEY}]\n[{PD_KEY}]",  # tomllib names a table declared twice
    f"{PD_KEY} = 1\n{PD_KEY} = 2",
])
def test_a_key_pasted_into_a_line_that_fails_to_parse_is_not_echoed(
        tmp_path: Path, pasted: str) -> None:
    """A secret pasted on a TOML line of its own fails to parse; the error names the line,
    and names the key standing there only when it looks like one a person typed."""
    text = GOOD.replace('path = "ledger.db"\n', f'path = "ledger.db"\n{pasted}\n')
    lines = problems(tmp_path, text)
    assert len(lines) == 1 and "invalid TOML" in lines[0]
    assert PD_KEY not in lines[0]
    assert re.match(rf"{re.escape(str(tmp_path / 'syncd.toml'))}:\d+: ", lines[0])


def test_a_config_key_on_a_line_that_fails_to_parse_is_still_named(tmp_path: Path) -> None:
    text = GOOD.replace('path = "ledger.db"\n', 'path = "ledger.db"\nbusy_timeout = \n')
    [line] = problems(tmp_path, text)
    assert line.startswith(f"{tmp_path / 'syncd.toml'}:4: ledger.busy_timeout: invalid TOML")


HEX_KEY = "3f2a9c1e0b7d4e8fa1c2b3d4e5f60718"


@pytest.mark.parametrize("ref", [f"file:{PD_KEY}", f"credential:{PD_KEY}",
                                 f"file:/run/secrets/{PD_KEY}", f"file:{HEX_KEY}"])
@pytest.mark.parametrize("credentials", [True, False])
def test_a_key_pasted_after_file_or_credential_is_not_echoed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: str, credentials: bool) -> None:
    """``file:KEY`` and ``credential:KEY`` name no file that exists: the error says so without
    the "name" when it looks like a key; a path or credential name people choose is named."""
    if credentials:
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    else:
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    [line] = problems(tmp_path, GOOD.replace('"env:T_SP_KEY"', f'"{ref}"'))
    assert "accounts.sp.api_key" in line and "not shown" in line
    assert PD_KEY not in line and HEX_KEY not in line
    if ref.startswith("file:/run/secrets/"):  # only the part that looks like a key is hidden
        assert "/run/secrets/(not shown" in line, line
    for named in (f"file:{tmp_path}/pd_token_2024", "credential:pagerduty-token"):
        [line] = problems(tmp_path, GOOD.replace('"env:T_SP_KEY"', f'"{named}"'))
        assert named.partition(":")[2].removeprefix(f"{tmp_path}/") in line


def test_a_secret_file_path_the_os_refuses_is_an_error_that_hides_the_key(
        tmp_path: Path) -> None:
    """A path the OS refuses for another reason than "missing" (through a plain file, a name
    too long, an unknown ~user) is a config error naming the key and line, never a traceback
    quoting the path whole: the path may end in a pasted key."""
    (tmp_path / "plain").write_text("x")
    for ref in (f"file:{tmp_path}/plain/{PD_KEY}", f"file:{tmp_path}/{PD_KEY * 20}",
                f"file:~{PD_KEY}/token"):
        [line] = problems(tmp_path, GOOD.replace('"env:T_SP_KEY"', f'"{ref}"'))
        assert "accounts.sp.api_key" in line and "secret file" in line, line
        assert PD_KEY not in line, line


PD_ALPHABET = string.ascii_letters + string.digits + "_+-"
"""What PagerDuty's 20-character API keys are drawn from."""


def random_key(seed: int) -> str:
    """A key as the vendors generate them: 20 random PagerDuty-alphabet characters, or 32 hex
    digits (seeded, so Hypothesis draws keys and never hand-picks "aaaa...", a key the
    vendor would generate about never and a person might type as a name)."""
    rng = random.Random(seed)
    if seed % 4 == 0:
        return f"{rng.getrandbits(128):032x}"
    return "".join(rng.choice(PD_ALPHABET) for _ in range(20))


def test_random_keys_are_never_printed_wherever_they_are_pasted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A random key after ``file:`` or ``credential:``, on a ``[ledger]`` line that fails to
    parse, as an unknown key of a table (``[ledger]`` or an account's), or where the file names
    things itself (``[accounts]``, ``[users]``, ``[users.ACCOUNT]``) is never printed,
    nor any 10 characters of it. The rule of runs alone let 11-15 % of PagerDuty-shaped keys
    through (``t8ClOnd5qY_PsRHH1crh``); config keys are now named only when they are schema
    fields, and ``file:``/``credential:`` names by a stricter look (derandomized: it lets a
    few in a million through, and this test must not flake on them)."""
    path = tmp_path / "syncd.toml"

    def printed(text: str, credentials: bool = False) -> str:
        if credentials:
            monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        else:
            monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        path.write_text(text)
        try:
            config.load(path)
        except config.ConfigError as exc:
            return str(exc)
        raise AssertionError("accepted")

    @hsettings(max_examples=60, derandomize=True, deadline=None)
    @given(st.integers(min_value=0, max_value=2**64))
    def check(seed: int) -> None:
        key = random_key(seed)
        texts = [GOOD.replace('"env:T_SP_KEY"', f'"{ref}"') for ref in
                 (f"file:{key}", f"file:/run/secrets/{key}", f"credential:{key}")]
        texts += [GOOD.replace('path = "ledger.db"\n', f'path = "ledger.db"\n{line}\n')
                  for line in (f"{key}=", key, f"{key} = 1")]
        texts.append(GOOD.replace('team_id = "', f'{key} = "x"\nteam_id = "'))
        # Where the file names things itself: an account, a [users] account, a vendor user.
        texts += [GOOD + f'\n[accounts]\n"{key}" = 1\n', GOOD + f'\n[users]\n"{key}" = "x"\n',
                  GOOD + f'\n[users.vo]\n"{key}" = "bad"\n']
        for text in texts:
            for credentials in (False, True) if "credential:" in text else (False,):
                out = printed(text, credentials)
                assert all(key[i:i + 10] not in out for i in range(len(key) - 9)), out

    check()


@pytest.mark.parametrize("ref", ["file:/run/secrets/pagerduty_token", "file:syncd-pd.key",
                                 "credential:pd-token", "credential:pd-token-2024",
                                 "file:/home/Alice/Secrets/pd.key", "credential:pd-eu1-v2",
                                 "file:/var/run/k8s/secrets/pd-token-v2"])
def test_names_people_choose_are_still_printed(tmp_path: Path, ref: str) -> None:
    [line] = problems(tmp_path, GOOD.replace('"env:T_SP_KEY"', f'"{ref}"'))
    assert ref.partition(":")[2] in line and "not shown" not in line, line


def test_names_the_file_chooses_are_named_when_they_look_like_names(tmp_path: Path) -> None:
    """An account or vendor user the file names itself is printed when it looks like a name,
    and pointed at by its line otherwise (a pasted key)."""
    path = tmp_path / "syncd.toml"
    number = len(GOOD.splitlines()) + 3  # the key's line: after a blank line and the header
    [line] = problems(tmp_path, GOOD + '\n[accounts]\nprod-eu = 1\n')
    assert line == f"{path}:{number}: accounts.prod-eu: expected a table", line
    [line] = problems(tmp_path, GOOD + '\n[users]\n"t8ClOnd5qY_PsRHH1crh" = "x"\n')
    assert line == (f"{path}:{number}: users.(a key on this line): no [accounts.NAME] section "
                    "of this name"), line
