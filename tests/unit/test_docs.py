"""The docs stay honest about what exists: the config keys the example and the TOML snippets in
the docs show are fields of the models that parse them (and the example shows every field),
every key commented out in the example still loads, and the metric names and labels the docs
give are the ones ``syncd/metrics.py`` defines. Each drifted once while code changed under it."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from annotated_types import Ge, Le
from prometheus_client import Metric
from pydantic import BaseModel

from syncd import config, metrics, vendors

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "syncd.example.toml"
DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# Identifiers in the docs that start like a metric and are not one.
NOT_METRICS = {"syncd_marker", "syncd_api_key_0001"}

# The tables a config file may hold, by the model that reads them.
TABLES: dict[str, type[BaseModel]] = {
    "ledger": config.LedgerConfig, "status": config.StatusConfig,
    "logging": config.LoggingConfig, "sync": config.SyncGroup, "oncall": config.OnCallMapping,
}
NESTED: dict[tuple[type[BaseModel], str], type[BaseModel]] = {
    (config.SyncGroup, "fields"): config.SyncFields,
    (config.OnCallMapping, "members"): config.OnCallMember,
}


def unknown_keys(model: type[BaseModel], table: dict[str, Any], where: str) -> Iterator[str]:
    """Every key of ``table`` (and of its nested tables) that ``model`` has no field for."""
    for key, value in table.items():
        if key not in model.model_fields:
            yield f"{where}.{key}"
            continue
        inner = NESTED.get((model, key))
        for item in value if isinstance(value, list) else [value]:
            if inner is not None and isinstance(item, dict):
                yield from unknown_keys(inner, item, f"{where}.{key}")


def unknown_in(data: dict[str, Any], where: str) -> list[str]:
    """The keys of a parsed config (whole or a snippet) that no model accepts."""
    found: list[str] = []
    for name, value in data.items():
        if name == "accounts":
            for account, table in value.items():
                settings = vendors.load(table["vendor"]).Settings
                found += unknown_keys(settings, table, f"{where}: accounts.{account}")
        elif name == "users":
            continue  # names the file chooses itself
        elif name in TABLES:
            for table in value if isinstance(value, list) else [value]:
                found += unknown_keys(TABLES[name], table, f"{where}: {name}")
        else:
            found.append(f"{where}: {name}")
    return found


def test_every_key_in_the_docs_toml_snippets_is_a_field() -> None:
    snippets = [(doc, block) for doc in DOCS
                for block in re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S)]
    assert len(snippets) >= 5
    found = [key for doc, block in snippets
             for key in unknown_in(tomllib.loads(block), str(doc.relative_to(ROOT)))]
    assert not found, f"documented keys that do not exist: {found}"


def is_toml(line: str) -> bool:
    """Whether a commented-out line is a key and value rather than prose starting like one."""
    try:
        tomllib.loads(line)
    except tomllib.TOMLDecodeError:
        return False
    return True


def uncommented_example() -> str:
    """The example with every ``# key = value`` line that names a field switched on, and
    incident.io's ``model = "alert"``, which the keys commented out after it need."""
    fields = {k for m in (*TABLES.values(), *NESTED.values()) for k in m.model_fields}
    fields |= {k for v in vendors.VENDORS for k in vendors.load(v).Settings.model_fields}
    out = []
    for line in EXAMPLE.read_text().splitlines():
        if (m := re.match(r"^# (\w+) = ", line)) and m.group(1) in fields and is_toml(line[2:]):
            line = line[2:]
        out.append(line)
    text = "\n".join(out) + "\n"
    assert text.count('\nmodel = "incident"\n') == 1
    return text.replace('\nmodel = "incident"\n', '\nmodel = "alert"\n')


def test_every_key_commented_out_in_the_example_loads(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    text = uncommented_example()
    assert 'url = "postgresql' in text and 'model = "alert"' in text
    for name in set(re.findall(r'"env:(\w+)"', text)):
        monkeypatch.setenv(name, f"value-of-{name.lower()}-0123456789")
    (tmp_path / "ledger-password").write_text("value-of-ledger-password\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    path = tmp_path / "syncd.toml"
    path.write_text(text.replace("/var/lib/syncd/", f"{tmp_path}/"))
    cfg = config.load(path)
    assert cfg.ledger.lease_ttl == 15 and cfg.status.allowed_hosts == ["syncd.internal"]
    assert cfg.accounts["incidentio"].model == "alert"


def test_the_example_shows_every_key_outside_accounts() -> None:
    """Account keys are checked by test_config; these are the rest of the schema."""
    data = tomllib.loads(uncommented_example())
    shown: dict[type[BaseModel], set[str]] = {}

    def collect(model: type[BaseModel], table: dict[str, Any]) -> None:
        shown.setdefault(model, set()).update(table)
        for (outer, key), inner in NESTED.items():
            if outer is model:
                for item in table.get(key, []) if key == "members" else [table.get(key, {})]:
                    collect(inner, item)

    for name, model in TABLES.items():
        for table in data[name] if isinstance(data[name], list) else [data[name]]:
            collect(model, table)
    missing = [f"{model.__name__}.{key}" for model in (*TABLES.values(), *NESTED.values())
               for key in model.model_fields if key not in shown.get(model, set())]
    assert not missing, f"keys config/syncd.example.toml does not show: {missing}"


def defined_metrics() -> dict[str, Metric]:
    """Every collector of syncd/metrics.py by its exposed name (counters without ``_total``)."""
    found = {}
    for value in vars(metrics).values():
        if hasattr(value, "_labelnames") and hasattr(value, "_name"):
            name = value._name + ("_total" if value._type == "counter" else "")
            found[name] = value
    return found


def test_every_metric_the_docs_name_exists_with_its_labels() -> None:
    defined = defined_metrics()
    wrong = []
    for doc in DOCS:
        text = doc.read_text()
        for name in set(re.findall(r"\bsyncd_\w+", text)) - NOT_METRICS:
            if re.sub(r"_(bucket|count|sum)$", "", name) not in defined:
                wrong.append(f"{doc.relative_to(ROOT)}: {name} is not a metric")
        for name, labels in re.findall(r"`(syncd_\w+)\{([\w,]+)\}`", text):
            if name in defined and set(labels.split(",")) != set(defined[name]._labelnames):
                wrong.append(f"{doc.relative_to(ROOT)}: {name}{{{labels}}}: the metric has "
                             f"{defined[name]._labelnames}")
    assert not wrong, wrong
    table = (ROOT / "README.md").read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    assert not [m for m in defined if f"`{m}" not in table], "metrics the README does not list"


def bounds(model: type[BaseModel]) -> dict[str, tuple[float, float]]:
    """The numeric fields of ``model`` that have a range, with it."""
    found = {}
    for name, field in model.model_fields.items():
        low = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
        high = next((m.le for m in field.metadata if isinstance(m, Le)), None)
        if low is not None and high is not None:
            found[name] = (low, high)
    return found


def test_the_security_range_table_gives_every_bounded_number() -> None:
    """docs/security.md promises every number has a range, in its table; a field added with
    bounds (or a minimum raised, as lease_ttl's to 6 s) must show up there."""
    text = (ROOT / "docs" / "security.md").read_text()
    table = text.split("| key | range | default |", 1)[1].split("\n\n", 1)[0]
    rows = {key: row for row in table.splitlines()[2:]
            for key in re.findall(r"`(?:\w+\.)*(\w+)`", row.split("|")[1])}
    models = [*TABLES.values(), *NESTED.values(),
              *(vendors.load(v).Settings for v in vendors.VENDORS)]
    missing = sorted({name for model in models for name in bounds(model) if name not in rows})
    assert not missing, f"bounded keys docs/security.md's range table does not give: {missing}"
    lease = rows["lease_ttl"].split("|")
    assert lease[2].strip().startswith(f"{config.MIN_LEASE_TTL:g} - ")
    assert lease[3].strip() == f"{config.LedgerConfig.model_fields['lease_ttl'].default:g}"


@pytest.mark.parametrize("vendor", vendors.VENDORS)
def test_each_vendor_page_shows_its_whole_account_table(vendor: str) -> None:
    """docs/vendors/<vendor>.md's account table names every key of the vendor's settings
    (set, commented out, or among the common keys it lists)."""
    text = (ROOT / "docs" / "vendors" / f"{vendor}.md").read_text()
    block = next(b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[accounts." in b)
    missing = [key for key in vendors.load(vendor).Settings.model_fields
               if not re.search(rf"\b{key}\b", block)]
    assert not missing, f"docs/vendors/{vendor}.md's account table leaves out {missing}"
