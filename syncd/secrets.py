"""Secret references: where a credential comes from, resolved once at config load.

A secret in the config is ``env:NAME``, ``file:PATH``, ``credential:NAME`` (systemd's
``$CREDENTIALS_DIRECTORY``, filled by ``LoadCredential=``) or a literal. Literals work, because
people paste keys while trying things out, but they earn a warning: a key in a config file ends up
in backups and diffs.

Resolved values live in pydantic ``SecretStr`` (its repr is ``'**********'``) and are registered
with :func:`register`. :func:`redact` is the one redaction function every exit uses: log events
(both formats, tracebacks included), text written to the ledger from vendor answers, CLI output,
``/status``, ``/metrics`` and exception messages. It knows every resolved secret (and the
JSON-escaped and percent-encoded forms a vendor or proxy may echo) and every URL password.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from pydantic import BeforeValidator, SecretStr, ValidationInfo

REDACTED = "[REDACTED]"
_KNOWN: set[str] = set()
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
T = TypeVar("T")
_SHELL_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
"""What an environment variable's name looks like by convention (upper case, digits, ``_``):
anything else after ``env:`` may be a key pasted there (PagerDuty's keys look like
``y_NbAkKc66ryYTWUXYEu``, which a looser rule took for a name), so it is never printed."""
_NAME_CHARS = re.compile(r"[A-Za-z0-9_./~@-]{1,4096}")
"""What a path, a credential name or a TOML key a person typed is made of; ``+``, ``=``, spaces
and the rest (base64, PagerDuty's ``u+...`` user tokens) make a text unprintable."""
_RUN = re.compile(r"[A-Za-z0-9]+")
_SHORT = 3
_WORD = re.compile(r"[A-Z]?[a-z]+[0-9]*|[A-Z]+[0-9]*|[0-9]+(?:[a-z]+|[A-Z]+)?")
"""A letter-and-digit run a person types: one word in one case (``token``, ``PD``, ``Alice``),
digits before or after it (``v2``, ``token2024``, ``2fa``). A generated key switches case and
class within a run (``t8ClOnd5qY``)."""
_TOKEN = re.compile(r"[A-Za-z0-9_./~@+=-]*[A-Za-z0-9][A-Za-z0-9_./~@+=-]*")
HIDDEN = "(not shown: it looks like a key, not a name)"


class SecretError(ValueError):
    """A secret reference that cannot be resolved; the message never contains the secret."""


def register(value: str) -> None:
    """Remember a secret value so :func:`redact` removes it wherever it appears, also in the
    escaped forms an echoing vendor or proxy produces (JSON strings, percent-encoding)."""
    if value and len(value) >= 4:
        _KNOWN.update({value, json.dumps(value)[1:-1], quote(value, safe="")})


def register_url(url: str) -> None:
    """Remember the password of a URL's userinfo (``postgresql://user:PASSWORD@host/db``)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        register(password)
        register(unquote(password))


def known() -> frozenset[str]:
    return frozenset(_KNOWN)


def safe_url(url: str) -> str:
    """``url`` with its userinfo (user and password) replaced by ``***``, for display, and any
    known secret redacted (a password with a raw "/" or given as ``?password=`` is not in the
    part before the first "/")."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        netloc, slash, path = rest.partition("/")
        if "@" in netloc:
            url = f"{scheme}://***@{netloc.rsplit('@', 1)[1]}{slash}{path}"
    return redact(url)


def redact(value: T) -> T:
    """``value`` with every known secret and URL password replaced by ``[REDACTED]``/``***``.

    Strings, and strings inside dicts, lists and tuples, are scrubbed; an exception becomes the
    scrubbed text ``"Type: message"``; anything else is returned as it is. Longer secrets are
    replaced first, so a secret that contains another is never half-replaced.
    """
    known = sorted(_KNOWN, key=len, reverse=True)
    return _scrub(value, known)  # type: ignore[no-any-return]


def _scrub(value: Any, known: list[str]) -> Any:
    if isinstance(value, str):
        for secret in known:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if "://" in value:
            value = _URL_PASSWORD.sub(r"\1***@", value)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, known) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v, known) for v in value)
    if isinstance(value, BaseException):
        return _scrub(f"{type(value).__name__}: {value}", known)
    return value


def looks_like_name(text: str) -> bool:
    """Whether ``text`` (a path, a credential or variable name) may be printed in an error.
    People paste keys where names go (after ``file:``, ``credential:``, ``env:``), and then the
    "name" is the secret. A name is made of :data:`_NAME_CHARS`; each of its letter-and-digit
    runs is a :data:`_WORD` shorter than 32, and no more than one of them mixes letters and
    digits, or mixes classes at all when 12 or longer; runs of up to three characters in one
    letter case (``eu1``, ``k8s``, ``v2``) are not judged. Names people choose
    (``/run/secrets/pagerduty_token_2024``, ``pd-token``, ``PD_TOKEN``, ``/home/Alice/pd.key``,
    ``pd-eu1-v2``) pass; of 2 million random 20-character PagerDuty-alphabet keys 5 to 9
    passed (the same with or without the short-run exemption; the length rule alone let 11 %
    through), and a 32-hex key never does. An unknown TOML key is not judged by its looks
    alone: config errors name it only as a schema field or its typo; a key the file chooses
    itself (an account, a vendor user) is named by this look (:mod:`syncd.config`)."""
    if not _NAME_CHARS.fullmatch(text):
        return False
    mixed = 0
    for run in _RUN.findall(text):
        lower, upper = any(c.islower() for c in run), any(c.isupper() for c in run)
        if len(run) <= _SHORT and not (lower and upper):
            continue  # eu1, k8s, v2, EU1: as common in names as in keys, so they judge nothing
        kinds = any(c.isdigit() for c in run) + lower + upper
        if len(run) >= 32 or (len(run) >= 12 and kinds >= 2) or not _WORD.fullmatch(run):
            return False
        mixed += any(c.isdigit() for c in run) and not run.isdigit()
    return mixed <= 1


def hide_keylike(text: str) -> str:
    """``text`` with every word that does not :func:`looks_like_name` replaced by
    :data:`HIDDEN`: for messages that quote what a person typed (tomllib names the keys it
    cannot declare), where a pasted key would otherwise be quoted too."""
    return _TOKEN.sub(lambda m: m.group() if looks_like_name(m.group()) else HIDDEN, text)


def shown_path(path: str) -> str:
    """``path`` for a message, its parts from the first that does not :func:`looks_like_name`
    on replaced by :data:`HIDDEN`: ``/var/run/k8s/secrets/KEY`` keeps the directory that
    says where syncd looked, and never prints the key pasted after it."""
    if looks_like_name(path):
        return path
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part and not looks_like_name(part):
            return "/".join([*parts[:i], HIDDEN])
    return HIDDEN  # every part a name, together too mixed: judge it whole


def _shown(name: str, what: str) -> str:
    """``name`` when it may be printed, else a phrase that says why it is not."""
    if looks_like_name(name):
        return name
    return f"({what} not shown: it does not look like one, so it may be the secret itself)"


def resolve(ref: str, *, warnings: list[str] | None = None, where: str = "") -> str:
    """Resolve one reference to its value. ``where`` names the key for error messages."""
    if ref.startswith("env:"):
        name = ref[4:]
        if not name:
            raise SecretError("env: reference has no variable name")
        value = os.environ.get(name)
        if value is None and not (_SHELL_NAME.fullmatch(name) and looks_like_name(name)):
            # "env:" followed by the key itself, pasted: naming it would print the secret.
            raise SecretError("the environment variable env: names is not set (its name is "
                              "not shown: it does not look like a variable name, so it may "
                              "be the secret itself)")
        if value is None:
            raise SecretError(f"environment variable {name} is not set")
        if not value:
            raise SecretError(f"environment variable {name} is empty")
    elif ref.startswith("file:"):
        shown_file = shown_path(ref[5:])
        try:
            path = Path(ref[5:]).expanduser()
        except RuntimeError:  # "~name/...": no such user (the name may be a pasted key)
            raise SecretError(f"secret file {shown_file}: no home directory for that "
                              "~user") from None
        value = _read(path, shown_file)
    elif ref.startswith("credential:"):
        name = ref[len("credential:") :]
        shown = repr(name) if looks_like_name(name) else _shown(name, "name")
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(
                f"credential {shown} requested but $CREDENTIALS_DIRECTORY is not set "
                "(use LoadCredential= in the systemd unit)"
            )
        if not name or "/" in name:
            raise SecretError(f"credential name {shown} is not a plain file name")
        value = _read(Path(directory) / name,
                      f"$CREDENTIALS_DIRECTORY/{_shown(name, 'name')}")
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
    except OSError as exc:
        # Any other (a path through a plain file, a name too long): the OS's own message
        # quotes the whole path, which may hold a pasted key; its reason alone does not.
        raise SecretError(f"secret file {shown} cannot be read ({exc.strerror or 'error'})"
                          ) from None
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
    resolved = resolve(value, warnings=context.get("warnings"), where=where)
    if not resolved.isascii() or not resolved.isprintable():
        # It travels in HTTP headers, which carry neither; httpx would fail at the first call.
        raise SecretError("the secret's value contains a control or non-ASCII character")
    return SecretStr(resolved)


Secret = Annotated[SecretStr, BeforeValidator(_validate)]
"""Field type for credentials in config models: resolves references, never prints the value."""
