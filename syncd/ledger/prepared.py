"""A poll page's statements, prepared once and run straight on SQLite's driver.

A page's reads are SELECTs with one IN list (the page's ids) and its writes are one statement
for up to a hundred rows. Through ``Connection.execute`` each costs SQLAlchemy ~0.2 ms beyond
SQLite's own work: re-rendering the IN list (``expanding`` parameters are post-compiled on
every call), rebuilding every row's parameter set through the compiler, result bookkeeping;
measured, that was most of what the reconcile pass spent beyond SQLite (issue 16, target 1).

So the statements stay SQLAlchemy Core over the sqlmodel tables, compiled by SQLAlchemy for the
connection's dialect, but on SQLite (``pysqlite``) the compiled SQL is kept (per IN-list length
for reads, per column set for writes) with its parameter order, bind and result processors,
and run on the transaction's own ``sqlite3`` connection: same SQL, same stored values (the same
processors), same transaction; driver errors reach callers wrapped as SQLAlchemy's
(``OperationalError``, ``IntegrityError``), as ``Connection.execute`` would raise them. The
BEGIN of every transaction takes the same road (:func:`syncd.ledger.store._sqlite_pragmas`).

Other dialects (PostgreSQL) take the ordinary Core path, where the network round trip
dominates: one code path for the statements, two ways of running them.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select
from sqlalchemy.sql.expression import Executable

Processor = Callable[[Any], Any]
_WritePlan = tuple[str, Callable[[Mapping[str, Any]], Sequence[Any]],
                   list[tuple[int, Processor]]]


def _direct(dialect: Dialect) -> bool:
    return dialect.name == "sqlite" and dialect.driver == "pysqlite"


def _driver(conn: Connection) -> sqlite3.Connection:
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


Kind = tuple[type, str, Any]


def _kind(dialect: Dialect) -> Kind:
    """What the kept SQL and processors depend on. Keyed by this, not by the dialect object:
    every engine has its own dialect, and a compiled statement holds its dialect, so caches
    keyed by the object (even weakly) would keep every engine's SQL for ever."""
    return type(dialect), dialect.paramstyle, getattr(dialect, "server_version_info", None)


def _wrapped(sql: str, params: Any, exc: sqlite3.Error) -> DBAPIError:
    return DBAPIError.instance(sql, params, exc, sqlite3.Error)


class _Param:
    """Stands for a named (non-IN) parameter while the expanded SQL is laid out."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Id:
    """Stands for the IN list's value at ``index`` while the expanded SQL is laid out."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


_ID, _NAMED, _CONSTANT = "id", "named", "constant"

MAX_LENGTHS = 256
"""IN-list lengths whose SQL an :class:`InSelect` keeps (pages come in a few sizes; an
unusual length is laid out again on each call rather than kept for ever)."""


def _slot(value: Any) -> tuple[str, Any]:
    """Where a laid-out parameter's value comes from at run time: the IN list (by index), a
    named parameter, or the statement itself (a literal compared against, bound once)."""
    if isinstance(value, _Id):
        return _ID, value.index
    if isinstance(value, _Param):
        return _NAMED, value.name
    return _CONSTANT, value


class Many:
    """An INSERT or UPDATE (``bindparam`` names for its WHERE) run for many rows at once.

    Every row of one call has the same keys, as for any executemany; what the rows leave out
    comes from the statement as ``Connection.execute`` takes it (a value given in
    ``.values()``, a column's scalar default), and a required parameter left out fails."""

    def __init__(self, stmt: Executable) -> None:
        self.stmt = stmt
        self._plans: dict[Kind, dict[tuple[str, ...], _WritePlan]] = {}

    def __call__(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        dialect = conn.dialect
        if not _direct(dialect):
            conn.execute(self.stmt, list(rows))  # type: ignore[arg-type]
            return
        keys = tuple(rows[0])
        plan = self._plans.get(_kind(dialect), {}).get(keys) or self._plan(dialect, keys)
        sql, row_of, processors = plan
        params = [row_of(r) for r in rows]
        if processors:
            params = [list(p) for p in params]
            for values in params:
                for i, process in processors:
                    if values[i] is not None:
                        values[i] = process(values[i])
        try:
            _driver(conn).executemany(sql, params)
        except sqlite3.Error as exc:
            raise _wrapped(sql, params, exc) from None

    def _plan(self, dialect: Dialect, keys: tuple[str, ...]) -> _WritePlan:
        compiled = self.stmt.compile(dialect=dialect, column_keys=list(keys))
        names = tuple(compiled.positiontup or ())
        given = [n for n in names if n in keys]
        getter: Callable[[Mapping[str, Any]], Any] = (
            itemgetter(*given) if given else lambda _row: ())
        constants = []  # values the statement holds (``.values(status=...)``, defaults)
        # A column default left to the statement compiles to an empty bind that Core fills
        # in per row ("prefetch"): take a scalar default once; a callable one must be given.
        prefetch = {c.key: c.default for c in (*compiled.insert_prefetch,
                                               *compiled.update_prefetch)}
        for i, name in enumerate(names):
            if name not in keys:
                bind = compiled.binds[name]
                default = prefetch.get(name)
                if default is not None and not default.is_scalar:
                    raise KeyError(f"rows for {compiled.string!r} lack {name} (its default is "
                                   "computed per row: give it)")
                if bind.required or bind.callable is not None:
                    raise KeyError(f"rows for {compiled.string!r} lack {name}")
                constants.append((i, default.arg if default is not None else bind.value))

        def row_of(row: Mapping[str, Any]) -> Sequence[Any]:
            values = getter(row)
            if len(given) == 1:
                values = (values,)
            if not constants:
                return values  # type: ignore[no-any-return]
            out = list(values)
            for i, value in constants:
                out.insert(i, value)
            return out

        processors = [(i, p) for i, n in enumerate(names)
                      if (p := compiled.binds[n].type.dialect_impl(dialect)
                          .bind_processor(dialect))]
        plan = (compiled.string, getter if len(given) > 1 and not constants else row_of,
                processors)
        self._plans.setdefault(_kind(dialect), {})[keys] = plan
        return plan


class InSelect:
    """A SELECT whose WHERE has one IN list, ``bindparam("ids", expanding=True)``, and any
    other named parameters. Returns its rows as named tuples (by position or column name)."""

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt
        self.row = namedtuple(  # type: ignore[misc]
            "Row", [c.key for c in stmt.selected_columns], rename=True)
        # The compiled statement and its result processors are stored together, so a thread
        # making its first call never sees one without the other.
        self._compiled: dict[Kind, tuple[Any, list[tuple[int, Processor]]]] = {}
        self._plans: dict[Kind, dict[int, tuple[str, list[tuple[str, Any]]]]] = {}

    def __call__(self, conn: Connection, ids: Sequence[Any], **params: Any) -> list[Any]:
        if not ids:
            return []
        dialect = conn.dialect
        if not _direct(dialect):
            return list(conn.execute(self.stmt, {"ids": list(ids), **params}).all())
        kind = _kind(dialect)
        plan = self._plans.get(kind, {}).get(len(ids)) or self._plan(dialect, len(ids), params)
        sql, order = plan
        args = [ids[v] if k is _ID else params[v] if k is _NAMED else v for k, v in order]
        try:
            raw = _driver(conn).execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _wrapped(sql, args, exc) from None
        make = tuple.__new__
        row = self.row
        results = self._compiled[kind][1]
        if not results:
            return [make(row, r) for r in raw]
        out = []
        for r in raw:
            values = list(r)
            for i, process in results:
                if values[i] is not None:
                    values[i] = process(values[i])  # type: ignore[misc]
            out.append(make(row, values))
        return out

    def _plan(self, dialect: Dialect, n: int, params: Mapping[str, Any]
              ) -> tuple[str, list[tuple[str, Any]]]:
        kind = _kind(dialect)
        held = self._compiled.get(kind)
        if held is None:
            held = (self.stmt.compile(dialect=dialect), [
                (i, p) for i, c in enumerate(self.stmt.selected_columns)
                if (p := c.type.dialect_impl(dialect).result_processor(dialect, None))])
            self._compiled[kind] = held
        compiled = held[0]
        state = compiled.construct_expanded_state(
            {"ids": [_Id(i) for i in range(n)], **{k: _Param(k) for k in params}})
        if any(state.processors.get(name) for name in state.positiontup or ()):
            raise TypeError(f"{state.statement!r}: parameters needing bind processing are "
                            "not supported here")
        plan = (state.statement, [_slot(state.parameters[name])
                                  for name in state.positiontup or ()])
        plans = self._plans.setdefault(kind, {})
        if len(plans) < MAX_LENGTHS:
            plans[n] = plan
        return plan
