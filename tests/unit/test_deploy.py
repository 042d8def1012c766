"""The packaging in deploy/: the systemd unit verifies and stays hardened, the sysusers/tmpfiles
files parse and agree with the unit, and the container runs as a non-root user.

The systemd checks run the real ``systemd-analyze`` where it exists and skip (with the reason)
elsewhere, so a laptop without systemd still runs the syntax checks.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "syncd.service"
SYSUSERS = DEPLOY / "syncd.sysusers"
TMPFILES = DEPLOY / "syncd.tmpfiles"
CONTAINERFILE = DEPLOY / "Containerfile"

MAX_EXPOSURE = 2.0


def _unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` pairs of a unit file, every value kept (LoadCredential= repeats)."""
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _systemd_analyze() -> tuple[str, int]:
    """Path and major version of systemd-analyze, or skip the test saying why."""
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not installed (no systemd here); unit checks need it")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"systemd (\d+)", out.stdout)
    if match is None:
        pytest.skip(f"cannot read the systemd version from {out.stdout!r}")
    return path, int(match.group(1))


def _syncd_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an existing binary, as syncd.service in tmp_path.

    ``verify`` checks that the ExecStart binary exists and /usr/bin/syncd is only there on an
    installed system, so the copy runs the venv's syncd entry point (or /bin/true without one).
    Nothing else changes.
    """
    venv_syncd = Path(sys.executable).parent / "syncd"
    binary = str(venv_syncd) if os.access(venv_syncd, os.X_OK) else shutil.which("true")
    assert binary, "neither the venv's syncd nor true(1) found"
    text = UNIT.read_text()
    rewritten = re.sub(r"^ExecStart=/usr/bin/syncd ", f"ExecStart={binary} ", text, flags=re.M)
    assert rewritten != text, "ExecStart=/usr/bin/syncd ... not found in the unit"
    copy = tmp_path / "syncd.service"
    copy.write_text(rewritten)
    return copy


# --- the unit ----------------------------------------------------------------------------------


def test_unit_has_the_required_settings() -> None:
    settings = _unit_settings(UNIT.read_text())
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "60",
        "ExecStart": "/usr/bin/syncd run -c /etc/syncd/syncd.toml",
        "Restart": "on-failure",
        "RestartSec": "5",
        "TimeoutStopSec": "15",
        "KillSignal": "SIGTERM",
        "StateDirectory": "syncd",
        "ConfigurationDirectory": "syncd",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert "SYNCD_LOG_FORMAT=json" in settings["Environment"]
    credentials = settings["LoadCredential"]
    assert "pagerduty-token:/etc/syncd/credentials/pagerduty-token" in credentials
    assert all(c.split(":", 1)[1].startswith("/etc/syncd/credentials/") for c in credentials)
    # The daemon needs exactly these families: notify socket, outbound HTTPS, loopback listener.
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "PrivateNetwork" not in settings


def test_the_unit_waits_longer_than_a_stop_takes() -> None:
    """A stop's budget (pushes on the wire, abandoned ones, the lease's last renewal and its
    release) once exceeded what the docs promised, and had no bound on PostgreSQL: the unit's
    SIGKILL must come after all of it, with a margin for closing the ledger."""
    from syncd.daemon import STOP_CANCEL_WAIT, STOP_GRACE
    from syncd.engine.leadership import RESIGN_WAIT

    (timeout,) = _unit_settings(UNIT.read_text())["TimeoutStopSec"]
    assert float(timeout) >= STOP_GRACE + 2 * STOP_CANCEL_WAIT + RESIGN_WAIT + 2


def test_unit_reserves_descriptors_for_vendor_traffic() -> None:
    """1024 descriptors (systemd's default soft limit) once ran out under 1,100 idle connections
    to the status port; the unit raises the limit itself because its syscall filter (~@resources)
    forbids the daemon's own setrlimit."""
    from syncd.http.descriptors import MAX_CONNECTIONS, connection_cap

    settings = _unit_settings(UNIT.read_text())
    assert "@resources" in " ".join(settings["SystemCallFilter"])
    (value,) = settings["LimitNOFILE"]
    soft = int(value.split(":")[0])
    assert soft >= 8192
    assert connection_cap(soft) == MAX_CONNECTIONS <= soft // 16


def test_unit_verifies(tmp_path: Path) -> None:
    analyze, _ = _systemd_analyze()
    unit = _syncd_unit(tmp_path)
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    # Other units on the host may draw warnings; only ours must be clean.
    ours = [line for line in result.stderr.splitlines() if "syncd.service" in line]
    assert result.returncode == 0, result.stderr
    assert ours == [], "\n".join(ours)


def test_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    analyze, version = _systemd_analyze()
    if version < 250:
        pytest.skip(f"systemd {version} lacks `security --offline` (needs 250 or later)")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for syncd\.service: (\d+(?:\.\d+)?)", output)
    assert match, f"no exposure figure in the output:\n{output}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{output}"


# --- sysusers.d / tmpfiles.d -------------------------------------------------------------------


def _entries(path: Path) -> list[list[str]]:
    """Non-comment lines split like systemd does (quotes group a field, e.g. GECOS)."""
    return [
        shlex.split(line)
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")


def test_sysusers_syntax_and_matches_unit() -> None:
    entries = _entries(SYSUSERS)
    assert entries, "no entries"
    for fields in entries:
        kind = fields[0]
        assert kind in {"u", "u!", "g", "m", "r"}, fields
        assert NAME.match(fields[1]), fields
        if kind.startswith("u"):
            assert 2 <= len(fields) <= 6, fields
            assert fields[2] == "-" or re.match(r"^\d+(:\d+)?$|^/", fields[2]), fields
            if len(fields) > 4:
                assert fields[4] == "-" or fields[4].startswith("/"), fields
    users = {fields[1] for fields in entries if fields[0].startswith("u")}
    user = _unit_settings(UNIT.read_text()).get("User", ["syncd"])[0]
    assert user in users


TMPFILES_TYPES = set("fFwdDevqQpLcbCxXrRzZtThHaA")


def test_tmpfiles_syntax_and_matches_unit() -> None:
    entries = _entries(TMPFILES)
    assert entries, "no entries"
    modes: dict[str, tuple[str, str, str]] = {}
    for fields in entries:
        assert len(fields) >= 2, fields
        assert fields[0].rstrip("!+-=~^") in TMPFILES_TYPES, fields
        assert fields[1].startswith("/"), fields
        if len(fields) > 2:
            assert re.match(r"^(-|~?:?[0-7]{3,4})$", fields[2]), fields
        if len(fields) > 4:
            modes[fields[1]] = (fields[2], fields[3], fields[4])
    users = {fields[1] for fields in _entries(SYSUSERS)}
    for _mode, owner, group in modes.values():
        assert owner in users | {"root", "-"} and group in users | {"root", "-"}
    settings = _unit_settings(UNIT.read_text())
    state = "/var/lib/" + settings["StateDirectory"][0]
    assert modes[state][1] == settings["User"][0]
    # Secrets dir: root only, since systemd (PID 1) is the one reading it for LoadCredential=.
    assert modes["/etc/syncd/credentials"] == ("0700", "root", "root")
    assert modes["/etc/" + settings["ConfigurationDirectory"][0]][2] == settings["Group"][0]


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers missing")
def test_sysusers_and_tmpfiles_accepted_by_systemd(tmp_path: Path) -> None:
    """The real tools, against a scratch root: nothing on this machine changes."""
    (tmp_path / "etc").mkdir()
    conf = tmp_path / "usr/lib/sysusers.d"
    conf.mkdir(parents=True)
    shutil.copy(SYSUSERS, conf / "syncd.conf")
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Creating user 'syncd'" in result.stderr + result.stdout

    if os.geteuid() != 0 or shutil.which("systemd-tmpfiles") is None:
        pytest.skip("systemd-tmpfiles --create needs root to chown (syntax checked above)")
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}"], check=True, capture_output=True)
    tconf = tmp_path / "usr/lib/tmpfiles.d"
    tconf.mkdir(parents=True)
    shutil.copy(TMPFILES, tconf / "syncd.conf")
    result = subprocess.run(
        ["systemd-tmpfiles", f"--root={tmp_path}", "--create"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var/lib/syncd").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "etc/syncd/credentials").stat().st_mode & 0o777 == 0o700


# --- Containerfile -----------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with backslash continuations joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    result = []
    for line in joined:
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def _is_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in {"root", "0"}


def test_the_container_docs_give_a_stop_the_units_time() -> None:
    """Container runtimes kill 10 s after the stop signal by default, less than a stop takes:
    the documented run line and orchestrator settings give it what the systemd unit gives."""
    (timeout,) = _unit_settings(UNIT.read_text())["TimeoutStopSec"]
    header = CONTAINERFILE.read_text()
    for setting in (f"--stop-timeout {timeout}", f"stop_grace_period: {timeout}s",
                    f"terminationGracePeriodSeconds: {timeout}"):
        assert setting in header, setting
    assert re.search(r"run -d .*--stop-timeout", header)
    assert "--stop-timeout" in (DEPLOY / "README.md").read_text()


def test_containerfile_is_non_root_and_minimal() -> None:
    instructions = _instructions(CONTAINERFILE)
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [(i, args) for i, (word, args) in enumerate(instructions) if word == "USER"]
    assert users, "no USER instruction: the container would run as root"
    first_non_root = next((i for i, args in users if not _is_root(args)), None)
    assert first_non_root is not None, "every USER is root"
    later_root = [args for i, args in users if i > first_non_root and _is_root(args)]
    assert later_root == [], "USER root after the non-root USER"
    # A fixed numeric uid so volume ownership is predictable.
    assert re.match(r"^\d+(:\d+)?$", users[-1][1]) and not _is_root(users[-1][1])
    by_word = {word: args for word, args in instructions}
    assert by_word["ENTRYPOINT"] == '["syncd"]'
    assert by_word["CMD"] == '["run", "-c", "/etc/syncd/syncd.toml"]'
    assert "http://127.0.0.1:9797/healthz" in by_word["HEALTHCHECK"]
    assert "curl" not in by_word["HEALTHCHECK"]  # slim has no curl


def test_containerfile_copies_every_file_the_build_needs() -> None:
    """``pip install .`` in the image builds from what the COPY lines brought in: the build
    failed ("Forced include not found: config/demo.toml") because the demo config, packaged for
    ``syncd demo`` and ``syncd sim all``, was not among them."""
    import tomllib

    root = DEPLOY.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())
    hatch = project["tool"]["hatch"]
    wheel = hatch["build"]["targets"]["wheel"]
    needed = ["pyproject.toml", project["project"]["readme"], hatch["version"]["path"],
              *wheel["packages"], *wheel.get("force-include", {})]
    copied = [Path(src) for word, args in _instructions(CONTAINERFILE) if word == "COPY"
              for src in args.split()[:-1] if not src.startswith("--")]
    missing = [path for path in needed
               if not any(Path(path) == src or src in Path(path).parents for src in copied)]
    assert missing == [], f"the image's build lacks {missing}"
    for path in needed:
        assert (root / path).exists(), path


def test_install_rebuilds_a_venv_of_a_python_older_than_3_11(tmp_path: Path) -> None:
    """A .venv made by an older python3 (before scripts/install picked the first Python 3.11+)
    has pip, so it was kept, and the install then failed in pip on syncd's requires-python.
    Stand-ins for the interpreters record what the script asks of them."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "scripts" / "install", root / "scripts")
    (root / "pyproject.toml").write_text("")
    calls = tmp_path / "calls"
    old = root / ".venv" / "bin" / "python"
    old.parent.mkdir(parents=True)
    old.write_text('#!/bin/sh\ncase "$*" in *version_info*) exit 1;; esac\nexit 0\n')  # 3.10
    new = tmp_path / "python3.11"
    new.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n'
                   'if [ "$1 $2" = "-m venv" ]; then mkdir -p .venv/bin\n'
                   '  printf "#!/bin/sh\\nexit 0\\n" > .venv/bin/python\n'
                   '  chmod +x .venv/bin/python; fi\n')
    for script in (old, new):
        script.chmod(0o755)
    subprocess.run(["bash", str(root / "scripts" / "install")], check=True, timeout=30,
                   env={**os.environ, "PYTHON": str(new), "SYNCD_INSTALL_POSTGRES": "0"})
    assert calls.read_text().splitlines() == ["-m venv --clear .venv"]
