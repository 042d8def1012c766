"""Field types and checks shared by every config model (``syncd.config`` and each vendor's
``Settings``), so what ``check-config`` accepts is what ``run`` can use.

Each check raises ``ValueError`` with a message that never contains the rejected value: a URL may
carry a password and a mistyped key may be a secret. The bounds are documented in
docs/security.md ("Configuration").
"""

from __future__ import annotations

import ipaddress
import re
import typing
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def check_text(value: Any) -> Any:
    """Reject control characters (NUL, newline, ...) anywhere in a string, list or table: they
    break HTTP headers, URLs, file paths and log lines at run time."""
    if isinstance(value, str):
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("contains a control character (newline, tab, NUL, ...)")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key)
            check_text(item)
    elif isinstance(value, list):
        for item in value:
            check_text(item)
    return value


class StrictModel(BaseModel):
    """Base of every config model: unknown keys refused, strict types (``true`` is not a number,
    ``1`` is not a string), finite numbers, no control characters in any string."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _holds_model(field.annotation):
            return value  # the nested model checks its own fields, naming the exact key
        return check_text(value)


def _holds_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(arg) for arg in typing.get_args(annotation))


def check_email(value: str) -> str:
    """An ASCII address a vendor accepts in a header or a JSON field (PagerDuty's From)."""
    if not value.isascii() or len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValueError("expected an ASCII email address such as syncd@example.com")
    return value


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1, localhost and *.localhost (RFC 6761: always the loopback interface)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str) -> str:
    """An IP literal or a DNS name; ``999.1.1.1`` (all-numeric, not an address) is neither."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return host
    except ValueError:
        pass
    labels = bare.rstrip(".").split(".")
    if (not bare or len(bare) > 253 or all(label.isdigit() for label in labels)
            or not all(_LABEL.fullmatch(label) for label in labels)):
        raise ValueError("the host is neither an IP address nor a valid host name")
    return host


def check_url(value: str) -> str:
    """A vendor API URL: https (http only to a loopback host), a valid host, no credentials,
    no query or fragment, nothing httpx would refuse at the first request."""
    if not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("must be a plain ASCII URL without spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL (bad host or port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValueError("must start with https:// (or http:// for a loopback host)")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (user:password@); the account's secret "
                         "keys hold them")
    host = parts.hostname or ""
    if not host:
        raise ValueError("has no host")
    check_host(f"[{host}]" if ":" in host else host)
    if port == 0:
        raise ValueError("has port 0")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError("must not have a query string or fragment")
    if scheme == "http" and not is_loopback(host):
        raise ValueError("http:// is only allowed for a loopback host (127.0.0.1, ::1, "
                         "localhost); use https://")
    return value


def bounded(default: Any, lo: float, hi: float, description: str, *,
            lo_open: bool = False) -> Any:
    """A number field with documented bounds; ``inf`` and ``nan`` are refused by the models."""
    low = {"gt": lo} if lo_open else {"ge": lo}
    return Field(default, le=hi, description=description, **low)


Url = Annotated[str, AfterValidator(check_url)]
Email = Annotated[str, AfterValidator(check_email)]

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
