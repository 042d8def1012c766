"""Simulators served over loopback: the connections they accept have Nagle's algorithm off, so a
keep-alive round trip does not wait for the client's delayed ACK (no duration is asserted)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from syncd import simulators
from syncd.simulators.server import start_in_thread


def test_accepted_connection_has_tcp_nodelay() -> None:
    running = start_in_thread(simulators.load("pagerduty")())
    try:
        with httpx.Client(timeout=10) as http:
            for _ in range(2):  # the second request reuses the kept-alive connection
                assert http.get(f"{running.base_url}/_sim/incidents").status_code == 200
            connections = list(running.server.server_state.connections)
            assert connections, "the keep-alive connection should still be open"
            for protocol in connections:
                sock = protocol.transport.get_extra_info("socket")  # type: ignore[attr-defined]
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        running.stop()



def test_sim_on_a_taken_port_is_one_line_and_exit_2() -> None:
    """``syncd sim VENDOR --port N`` on a port in use was a bind traceback and exit 1, where
    ``syncd sim all`` says it in one line with exit 2; scripts start simulators this way."""
    from typer.testing import CliRunner

    from syncd import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli.app, ["sim", "spike", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"syncd: cannot serve spike on 127.0.0.1:{port}: "
                                     "Address already in use"), result.output


def test_sim_with_a_missing_certificate_names_the_file(tmp_path: Path) -> None:
    """``--certfile``/``--keyfile`` naming a file that is not there said only "No such file
    or directory" (the TLS layer's error names no file): which of the two?"""
    from typer.testing import CliRunner

    from syncd import cli

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not checked here")
    result = CliRunner().invoke(cli.app, ["sim", "spike", "--certfile", str(cert),
                                          "--keyfile", str(key)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"syncd: --keyfile {key}: No such file or directory"
