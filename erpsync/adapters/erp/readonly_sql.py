"""Is a user's `generic-sql` query exactly one statement that only reads? Checked with a SQL parser.

`config check` refuses anything else (exit 2 naming ``source.generic.query``). This is the first of
two guards: the second is the read-only session that runs the query (erpsync/adapters/erp/sql_engine.py),
where a second statement cannot be sent and a write is refused by the database itself. The parser
cannot see inside a user-defined function that writes; the read-only session refuses that write.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlglot import exp

# SQLAlchemy backend name -> sqlglot dialect
DIALECTS = {
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
    "mssql": "tsql",
}

# Built-in functions that write or change the session although they are called from a SELECT.
WRITING_FUNCTIONS = frozenset(
    {
        "nextval",
        "setval",
        "set_config",
        "lo_import",
        "lo_export",
        "lo_unlink",
        "lo_create",
        "dblink",
        "dblink_exec",
        "pg_advisory_lock",
        "pg_advisory_xact_lock",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "get_lock",
        "release_lock",
        "sys_exec",
        "load_extension",
    }
)


@cache
def _forbidden() -> tuple[type[exp.Expression], ...]:
    """Nodes that write, lock, end a transaction or change the session, wherever they are in the tree."""
    from sqlglot import exp  # noqa: PLC0415 - sqlglot loads in ~0.3 s; only generic-sql configs need it

    return (
        exp.Insert,
        exp.Update,
        exp.Delete,
        exp.Merge,
        exp.Create,
        exp.Drop,
        exp.Alter,
        exp.TruncateTable,
        exp.Command,
        exp.Transaction,
        exp.Commit,
        exp.Rollback,
        exp.Set,
        exp.Pragma,
        exp.Copy,
        exp.Grant,
        exp.Use,
        exp.Execute,
        exp.Into,
        exp.Lock,
        exp.NextValueFor,
    )


def read_only_select_problem(query: str, backend: str | None = None) -> str | None:
    """Why `query` is not exactly one read-only SELECT (``WITH ... SELECT`` included); None if it is."""
    import sqlglot  # noqa: PLC0415 - see _forbidden
    from sqlglot import exp  # noqa: PLC0415
    from sqlglot.errors import ParseError, TokenError  # noqa: PLC0415

    dialect = DIALECTS.get(backend or "")
    try:
        statements = [s for s in sqlglot.parse(query, read=dialect) if s is not None]
    except ParseError as exc:
        where = exc.errors[0] if exc.errors else {}
        return (
            f"not valid SQL ({dialect or 'generic'} dialect) near line {where.get('line', '?')}, "
            f"column {where.get('col', '?')}; it must be exactly one SELECT statement"
        )
    except TokenError:
        return "not valid SQL (an unterminated quote or comment?); it must be exactly one SELECT statement"
    if len(statements) != 1:
        return f"{len(statements)} statements found; it must be exactly one SELECT statement"
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        return f"a {statement.key.upper()} statement; it must be a SELECT (or WITH ... SELECT)"
    for node in statement.walk():
        if isinstance(node, _forbidden()):
            what = "SELECT ... INTO" if isinstance(node, exp.Into) else node.key.upper()
            if isinstance(node, exp.Lock):
                what = "FOR UPDATE / FOR SHARE (a row lock)"
            return f"contains {what}; erpsync only reads the ERP, so the query may only read"
        if isinstance(node, exp.Func) and _function_name(node) in WRITING_FUNCTIONS:
            name = _function_name(node)
            return f"calls {name}(), which writes or changes the session; the query may only read"
    return None


def without_trailing_semicolon(query: str) -> str:
    """The query as it is embedded in erpsync's SELECT: no trailing ';' (a checked single statement)."""
    return query.rstrip().rstrip(";").rstrip()


def _function_name(node: exp.Func) -> str:
    from sqlglot import exp  # noqa: PLC0415 - see _forbidden

    name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
    return name.lower()
