"""structlog, configured once: JSON lines for journald, a console renderer on a terminal.

The redaction processor is the last line of defence for secrets: every value syncd resolved from
the config is registered in :mod:`syncd.secrets`, and any occurrence of one in any event field
(nested or not, in exception text too) is replaced before rendering, in both formats. Tracebacks
never show local variables. Third-party loggers (uvicorn, apscheduler) go through the same
processors, so nothing reaches the output around them.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

from syncd import secrets
from syncd.logthrottle import RepeatThrottle

REDACTED = secrets.REDACTED
FORMATS = ("auto", "json", "console")
"""Values of ``[logging] format`` and of ``$SYNCD_LOG_FORMAT``, which overrides it."""


def redact_secrets(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace every registered secret value wherever it appears.

    ``exc_info`` is left for the renderer: the console renderer formats it with
    :func:`_plain_traceback`, which redacts the text it produces."""
    return {key: value if key == "exc_info" else secrets.redact(value)
            for key, value in event.items()}


def _plain_traceback(sio: TextIO, exc_info: Any) -> None:
    """Console exception formatter: a plain traceback, redacted, without local variables
    (rich's default shows every frame's locals, which hold resolved keys redaction never sees)."""
    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    sio.write(secrets.redact(buffer.getvalue()))


def configure(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: Any = None,
    throttle: RepeatThrottle | None = None,
) -> None:
    """Configure structlog and the stdlib root logger (uvicorn, apscheduler) the same way.
    Repeated warnings and errors are collapsed by ``throttle`` (a fresh one by default)."""
    throttle = throttle or RepeatThrottle()
    stream = stream or sys.stdout
    override = os.environ.get("SYNCD_LOG_FORMAT")
    ignored = None
    if override is not None:
        wanted = override.strip().lower()
        if wanted in FORMATS:
            fmt = wanted  # type: ignore[assignment]
        elif wanted:
            ignored = override
    use_json = fmt == "json" or (fmt == "auto" and not _isatty(stream))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        tail: list[Any] = [
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ]
    else:
        tail = [redact_secrets, structlog.dev.ConsoleRenderer(
            colors=_isatty(stream), exception_formatter=_plain_traceback)]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, throttle.processor, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through the stdlib; route them through the same renderer.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared, processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail
            ]
        )
    )
    handler.addFilter(throttle.filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING) if numeric < logging.WARNING else numeric)
    # uvicorn's default dictConfig gives its loggers their own handler and stops propagation;
    # a server started earlier in this process (a simulator) may have done so. Undo it, so the
    # status server's lines and tracebacks come out here, redacted, in this format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # "skipped: maximum number of running instances reached" is the coalescing we asked for.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    if ignored is not None:
        structlog.get_logger(__name__).warning(
            "logging.format_ignored", variable="SYNCD_LOG_FORMAT", value=ignored[:40],
            expected=list(FORMATS), using=fmt)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
