"""Tell systemd how the daemon is doing: READY, STATUS, WATCHDOG and STOPPING.

Why: deploy/syncd.service is ``Type=notify`` with ``WatchdogSec=``, so systemd only considers the
unit started once we send ``READY=1``, shows our ``STATUS=`` line in ``systemctl status``, and
restarts us if ``WATCHDOG=1`` stops arriving. The protocol is small enough that implementing it
here is cheaper than a dependency on libsystemd (or a binding that needs it at build time): a
container or a plain venv install keeps working, and without ``$NOTIFY_SOCKET`` everything is a
no-op.

The protocol, as sd_notify(3) describes it (NOTES section, quoted by L. Poettering at
https://mail-archive.com/systemd-devel@lists.freedesktop.org/msg43728.html; man page at
https://mankier.com/3/sd_notify):

* each notification is a single datagram whose payload is a newline-separated list of
  ``VAR=value`` assignments (like an environment block), sent to the ``AF_UNIX`` socket named by
  ``$NOTIFY_SOCKET``;
* if that name starts with ``@`` it is a Linux abstract-namespace socket (the ``@`` becomes a
  leading NUL byte);
* systemd only accepts it from processes that ``NotifyAccess=`` allows (``main`` in our unit).

The watchdog, per sd_watchdog_enabled(3) (https://man7.org/linux/man-pages/man3/sd_watchdog_enabled.3.html):
``$WATCHDOG_USEC`` is the timeout in microseconds; it applies to this process only if
``$WATCHDOG_PID`` is unset or equals our PID; a daemon should send ``WATCHDOG=1`` every half of
that timeout.

We do not pass credentials or file descriptors (``FDSTORE``), which syncd does not need.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger(__name__)

_warned = False


def _address(name: str) -> str | bytes:
    """Turn ``$NOTIFY_SOCKET`` into a sockaddr: ``@name`` means the abstract namespace."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def _encode(fields: dict[str, object]) -> bytes:
    """``VAR=value`` lines; newlines inside a value would start a bogus assignment, so flatten."""
    lines = []
    for key, value in fields.items():
        text = str(int(value)) if isinstance(value, bool) else str(value)
        lines.append(f"{key}={text.replace(chr(10), ' ').replace(chr(13), ' ')}")
    return "\n".join(lines).encode("utf-8")


def enabled() -> bool:
    """True when a service manager is listening (we run under Type=notify)."""
    return bool(os.environ.get("NOTIFY_SOCKET"))


def notify(**fields: object) -> bool:
    """Send one datagram with ``fields`` as assignments, e.g. ``notify(READY=1, STATUS="up")``.

    Returns True if the datagram was sent, False when not under systemd or on failure. Never
    raises: losing a notification must not take the daemon down (systemd's watchdog is the
    safety net), and the failure is logged once so a broken socket does not flood the journal.
    """
    global _warned
    name = os.environ.get("NOTIFY_SOCKET")
    if not name or not fields:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(_encode(fields), _address(name))
    except (OSError, ValueError, UnicodeError) as exc:
        if not _warned:
            _warned = True
            log.warning(
                "sd_notify failed; further failures are not logged",
                socket=name,
                error=f"{type(exc).__name__}: {exc}",
            )
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Start-up finished: systemd marks the unit active and releases units ordered after us."""
    if status_text is None:
        return notify(READY=1)
    return notify(READY=1, STATUS=status_text)


def status(text: str) -> bool:
    """One human line shown by ``systemctl status`` (e.g. links and pending pushes)."""
    return notify(STATUS=text)


def watchdog() -> bool:
    """Keep-alive; send it every ``watchdog_interval() / 2`` seconds or systemd restarts us."""
    return notify(WATCHDOG=1)


def stopping() -> bool:
    """Shutdown has begun (SIGTERM): systemd shows 'deactivating' while pushes drain."""
    return notify(STOPPING=1)


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds (ping at half of it), or None when no watchdog applies.

    None when ``$WATCHDOG_USEC`` is unset, not a positive integer, or ``$WATCHDOG_PID`` names
    another process (the variables were inherited by a child, which must not ping for us).
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000
