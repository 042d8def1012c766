"""sd_notify over a real AF_UNIX datagram socket, the way systemd receives it."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from syncd import sdnotify


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests may run under systemd themselves; never leak the real socket or watchdog."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sdnotify, "_warned", False)


@pytest.fixture
def path_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A listening datagram socket on a file path (short tmp dir: sun_path is 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sdn") as directory:
        path = str(Path(directory) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(path)
            server.settimeout(2)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            yield server


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A listening datagram socket in the Linux abstract namespace, named ``@...`` in the env."""
    name = f"syncd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(b"\0" + name.encode())
        server.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield server


def test_helpers_send_the_exact_datagrams(path_socket: socket.socket) -> None:
    assert sdnotify.ready() is True
    assert path_socket.recv(4096) == b"READY=1"
    assert sdnotify.status("3 links, 0 pending") is True
    assert path_socket.recv(4096) == b"STATUS=3 links, 0 pending"
    assert sdnotify.watchdog() is True
    assert path_socket.recv(4096) == b"WATCHDOG=1"
    assert sdnotify.stopping() is True
    assert path_socket.recv(4096) == b"STOPPING=1"


def test_several_fields_go_in_one_datagram(path_socket: socket.socket) -> None:
    assert sdnotify.ready("polling 2 accounts") is True
    assert path_socket.recv(4096) == b"READY=1\nSTATUS=polling 2 accounts"
    assert sdnotify.notify(STATUS="a\nb", ERRNO=5) is True
    # A newline in a value would smuggle in another assignment; it is flattened.
    assert path_socket.recv(4096) == b"STATUS=a b\nERRNO=5"


def test_abstract_namespace_socket(abstract_socket: socket.socket) -> None:
    assert sdnotify.ready() is True
    assert abstract_socket.recv(4096) == b"READY=1"
    assert sdnotify.watchdog() is True
    assert abstract_socket.recv(4096) == b"WATCHDOG=1"


def test_no_op_without_notify_socket() -> None:
    assert sdnotify.enabled() is False
    assert sdnotify.ready() is False
    assert sdnotify.status("x") is False
    assert sdnotify.watchdog() is False
    assert sdnotify.stopping() is False
    assert sdnotify.notify(READY=1) is False


def test_send_failure_does_not_raise_and_logs_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    with capture_logs() as logs:
        assert sdnotify.ready() is False
        assert sdnotify.watchdog() is False
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["error"].startswith(("FileNotFoundError", "ConnectionRefusedError"))


def test_oversized_socket_name_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/" + "x" * 200)  # longer than sun_path
    assert sdnotify.status("x") is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("60000000", None, 60.0),
        ("30000000", "self", 30.0),
        ("1500000", None, 1.5),
        ("60000000", "other", None),  # inherited by a process systemd does not watch
        ("60000000", "not-a-pid", None),
        ("0", None, None),
        ("-5", None, None),
        ("sixty", None, None),
        (None, None, None),
        ("", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        value = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(pid, pid)
        monkeypatch.setenv("WATCHDOG_PID", value)
    assert sdnotify.watchdog_interval() == expected
