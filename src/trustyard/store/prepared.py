"""Prebuilt statements run straight on the SQLite driver, with SQLAlchemy's decisions kept.

``Connection.execute`` costs about 40 µs per statement in SQLAlchemy's own machinery (the
execution context, parameter construction, the result object, events) around 3-10 µs in
the driver. On the ACME hot path that is a third of a worker's CPU, so the store runs its
prebuilt statements (module-level Core constructs) through a ``Plan``: SQLAlchemy compiles
the statement once for the dialect, and the plan keeps what it decided — the SQL text, the
order of the parameters, the literal values, each type's bind and result conversion — and
then only converts the parameters, calls the driver and converts the rows.

What a plan does not do, it refuses or hands back: statements whose parameters are expanded
at execution time (``IN`` lists) are not planned; driver errors come out as SQLAlchemy's
exceptions (``IntegrityError``...), as ``Connection.execute`` raises them; a plan runs only
inside a transaction the store began (SQLAlchemy would autobegin one; the driver would
silently autocommit).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import Select


class PlanResult:
    """The subset of SQLAlchemy's ``CursorResult`` the store uses."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rowcount: int, rows: list[Any]) -> None:
        self.rowcount, self._rows = rowcount, rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise (exc.NoResultFound("no row was found when one was required") if not self._rows else
                   exc.MultipleResultsFound("multiple rows were found when exactly one was required"))
        return self._rows[0]

    def fetchall(self) -> list[Any]:
        return self._rows

    def __iter__(self) -> Any:
        return iter(self._rows)


class Plan:
    """One statement compiled for one dialect and one set of parameter names."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: Sequence[str]) -> None:
        if dialect.paramstyle != "qmark":
            raise ValueError(f"plans are for positional (qmark) drivers, not {dialect.paramstyle}")
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)  # a statement, not DDL
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("statements with parameters expanded at execution time are not planned")
        self.sql = compiled.string
        self._dbapi_error = dialect.loaded_dbapi.Error
        binds = compiled.binds
        names = compiled.positiontup or []
        given = set(keys)
        # (name, whether the caller gives it, else its fixed value, converter or None) per parameter
        self._params: list[tuple[str, bool, Any, Callable[[Any], Any] | None]] = []
        for name in names:
            bind = binds[name]
            if name not in given and bind.required:  # as SQLAlchemy: no silent NULL for a missing value
                raise exc.InvalidRequestError(f"A value is required for bind parameter {name!r}")
            converter = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self._params.append((name, name in given, None if name in given else bind.effective_value, converter))
        self._row: Any = None
        self._readers: list[Callable[[Any], Any] | None] = []
        if isinstance(statement, Select):
            columns = list(statement.selected_columns)
            self._row = namedtuple("Row", [c.key for c in columns])  # type: ignore[misc]
            self._readers = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]

    def _args(self, params: Mapping[str, Any]) -> list[Any]:
        args = []
        for name, given, fixed, converter in self._params:
            if given:
                try:
                    value = params[name]
                except KeyError:  # a later row of an executemany without it
                    raise exc.InvalidRequestError(f"A value is required for bind parameter {name!r}") from None
            else:
                value = fixed
            args.append(converter(value) if converter is not None else value)
        return args

    def run(self, conn: Connection, params: dict[str, Any] | Sequence[dict[str, Any]] | None) -> PlanResult:
        if not conn.in_transaction():
            raise RuntimeError("a plan runs inside a transaction of the store")
        raw = conn.connection.dbapi_connection
        assert raw is not None
        try:
            if params is None or isinstance(params, Mapping):
                cursor = raw.execute(self.sql, self._args(params or {}))
            else:
                cursor = raw.executemany(self.sql, [self._args(p) for p in params])
        except self._dbapi_error as error:
            raise exc.DBAPIError.instance(self.sql, params, error, self._dbapi_error) from error
        if self._row is None:
            return PlanResult(cursor.rowcount, [])
        make, readers = self._row._make, self._readers
        rows = [make([value if read is None or value is None else read(value)
                      for read, value in zip(readers, raw_row)]) for raw_row in cursor.fetchall()]
        return PlanResult(len(rows), rows)
