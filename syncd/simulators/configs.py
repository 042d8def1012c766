"""Config text for accounts served by simulators: what a user would write for a ``syncd sim``
server, built from its describe() line. Used by the tests' and benchmarks' worlds so both load
their settings through the real config loader."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from syncd.simulators import load


def account_table(vendor: str, desc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[accounts.NAME]`` keys for a simulator's describe() line; each simulator class
    knows its own (``Simulator.account_table``)."""
    return load(vendor).account_table(desc)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(tables: Mapping[str, Mapping[str, Any]], groups: Sequence[Mapping[str, Any]],
           ledger: Path | Mapping[str, Any], extra: str = "") -> str:
    """A whole config file: ledger (a SQLite file, or the ``[ledger]`` keys), status server
    off, the accounts and the sync groups."""
    keys = {"path": str(ledger)} if isinstance(ledger, Path) else dict(ledger)
    lines = ["[ledger]", *(f"{k} = {toml_value(v)}" for k, v in keys.items()), "",
             "[status]", "enabled = false", ""]
    for name, table in tables.items():
        lines.append(f"[accounts.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    for group in groups:
        lines.append("[[sync]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in group.items()]
        lines.append("")
    return "\n".join(lines) + extra
