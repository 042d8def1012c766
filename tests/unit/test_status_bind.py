"""The status server's sockets are bound as asyncio's ``create_server`` (what uvicorn used) binds a
listen host: every address it resolves to, IPv6 sockets IPv6-only. Binding the first address
with the system's default made ``[::]`` also take every IPv4 address (and ``[::1]`` refuse a
port IPv4 holds), and made ``localhost`` one family only."""

from __future__ import annotations

import socket

import pytest

from syncd.http.status import bind


def ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_listen_is_ipv6_only() -> None:
    socks = bind("[::1]:0")
    try:
        assert [s.family for s in socks] == [socket.AF_INET6]
        assert socks[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        port = socks[0].getsockname()[1]
        with socket.socket(socket.AF_INET) as v4:  # the same port on IPv4 stays free
            v4.bind(("127.0.0.1", port))
    finally:
        for s in socks:
            s.close()


def test_every_address_a_host_resolves_to_is_bound() -> None:
    want = {info[4][0] for info in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)}
    socks = bind("localhost:0")
    try:
        assert {s.getsockname()[0] for s in socks} == want
    finally:
        for s in socks:
            s.close()
