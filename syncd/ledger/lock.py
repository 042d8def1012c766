"""One writing syncd per SQLite ledger: an exclusive ``flock`` on ``<ledger>.lock`` beside it.

Two daemons on one ledger both poll and both push, so every change goes out twice (and mirrored
incidents are created twice). ``syncd run``, ``syncd once`` and a repairing ``syncd oncall`` take
this lock for their whole life; read-only commands (``status``, ``links``, ``audit``) never do, so
they keep working next to a running daemon.

``flock`` is released by the kernel when the holder dies, however it dies (SIGKILL included), so
a stale lock file never blocks a restart; the file itself is left in place (deleting it would let
a third process lock a new inode while a second still holds the old one). The holder writes its
pid into the file so the refusal can name it. PostgreSQL ledgers need no file lock (the
high-availability lease replaces it there).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from syncd.ledger.errors import LedgerBusy


def lock_path(ledger_path: Path) -> Path:
    return ledger_path.with_name(ledger_path.name + ".lock")


class LedgerLock:
    """The exclusive lock on one ledger file, held until :meth:`release` or process exit."""

    def __init__(self, ledger_path: Path) -> None:
        self.path = lock_path(ledger_path)
        self._fd: int | None = None
        self._writable = False

    def acquire(self, what: str) -> None:
        """Take the lock or raise :class:`LedgerBusy` at once (never wait: a second daemon must
        fail loudly, not queue up behind the first). ``what`` names the ledger in messages."""
        writable = True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            # Left by another user (root running `syncd once` by hand): flock needs no write
            # access, only the pid cannot be recorded.
            writable = False
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise LedgerBusy(f"cannot open the lock file {self.path} of ledger {what}: "
                                 f"{exc.strerror}") from None
        except OSError as exc:
            raise LedgerBusy(f"cannot open the lock file {self.path} of ledger {what}: "
                             f"{exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise LedgerBusy(
                f"ledger {what} is in use by another syncd ({holder}, holding {self.path}); "
                "stop it first: only one process may sync a ledger at a time"
            ) from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._writable = fd, writable

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._writable:
                os.ftruncate(fd, 0)  # no stale pid for the next reader
        finally:
            os.close(fd)  # closing the last descriptor drops the flock


def _holder(fd: int) -> str:
    """``pid N`` from the lock file; the holder writes it right after locking, so a refusal that
    races with that write reads again briefly before giving up."""
    for _ in range(20):
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if text.isdigit():
            return f"pid {text}"
        time.sleep(0.01)
    return "pid unknown"
