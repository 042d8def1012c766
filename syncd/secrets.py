"""Secret references: where a credential comes from, resolved once at config load.

A secret in the config is ``env:NAME``, ``file:PATH``, ``credential:NAME`` (systemd's
``$CREDENTIALS_DIRECTORY``, filled by ``LoadCredential=``) or a literal. Literals work, because
people paste keys while trying things out, but they earn a warning: a key in a config file ends up
in backups and diffs.

Resolved values live in pydantic ``SecretStr`` (its repr is ``'**********'``) and are registered
with :func:`register` so the log redaction processor can scrub them from any event.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr, ValidationInfo

_KNOWN: set[str] = set()


class SecretError(ValueError):
    """A secret reference that cannot be resolved; the message never contains the secret."""


def register(value: str) -> None:
    """Remember a secret value so the logging redactor removes it wherever it appears."""
    if value and len(value) >= 4:
        _KNOWN.add(value)


def known() -> frozenset[str]:
    return frozenset(_KNOWN)


def resolve(ref: str, *, warnings: list[str] | None = None, where: str = "") -> str:
    """Resolve one reference to its value. ``where`` names the key for error messages."""
    if ref.startswith("env:"):
        name = ref[4:]
        if not name:
            raise SecretError("env: reference has no variable name")
        value = os.environ.get(name)
        if value is None:
            raise SecretError(f"environment variable {name} is not set")
        if not value:
            raise SecretError(f"environment variable {name} is empty")
    elif ref.startswith("file:"):
        value = _read(Path(ref[5:]).expanduser(), ref[5:])
    elif ref.startswith("credential:"):
        name = ref[len("credential:") :]
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(
                f"credential {name!r} requested but $CREDENTIALS_DIRECTORY is not set "
                "(use LoadCredential= in the systemd unit)"
            )
        if not name or "/" in name:
            raise SecretError(f"credential name {name!r} is not a plain file name")
        value = _read(Path(directory) / name, f"$CREDENTIALS_DIRECTORY/{name}")
    else:
        value = ref
        if warnings is not None:
            warnings.append(
                f"{where or 'a secret'} is a literal value in the config file; "
                "prefer env:, file: or credential:"
            )
    register(value)
    return value


def _read(path: Path, shown: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SecretError(f"secret file {shown} does not exist") from None
    except PermissionError:
        raise SecretError(f"secret file {shown} is not readable (permission denied)") from None
    except IsADirectoryError:
        raise SecretError(f"secret file {shown} is a directory") from None
    except UnicodeDecodeError:
        raise SecretError(f"secret file {shown} is not UTF-8 text") from None
    if not value:
        raise SecretError(f"secret file {shown} is empty")
    return value


def _validate(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise SecretError("expected a string: env:NAME, file:PATH, credential:NAME or a literal")
    context = info.context or {}
    where = ".".join(str(p) for p in [*context.get("path", ()), info.field_name] if p)
    return SecretStr(resolve(value, warnings=context.get("warnings"), where=where))


Secret = Annotated[SecretStr, BeforeValidator(_validate)]
"""Field type for credentials in config models: resolves references, never prints the value."""
