"""``yunying sql``: read-only SQL over one project's ``events``, ``persons`` and
``person_distinct_ids``, in the engine's own dialect.

The query is parsed with SQLGlot; anything but a query is refused, every table reference must be
one of the three relations (or a CTE of the query itself), and each reference is replaced by the
project-scoped subquery from :meth:`EventStore.scoped`, so no other project's rows are reachable.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from yunying.errors import ReadOnlyViolation
from yunying.store.base import RELATIONS, EventStore, QueryResult

#: Functions that read or write outside the database; refused even inside a SELECT.
FORBIDDEN_FUNCTION_PREFIXES = (
    "read_",
    "write_",
    "glob",
    "sniff_",
    "parquet_",
    "duckdb_",
    "pragma_",
    # ClickHouse: dictionaries and Join tables are other tables; filesystem* probes the host
    "dict",
    "joinget",
    "filesystem",
)
FORBIDDEN_FUNCTIONS = {
    "query",
    "query_table",
    "getenv",
    "current_setting",
    "file",
    "url",
    "s3",
    "remote",
    # ClickHouse table functions (also refused where they stand in for a table) and host probes
    "remotesecure",
    "cluster",
    "clusterallreplicas",
    "s3cluster",
    "hdfs",
    "azureblobstorage",
    "gcs",
    "mysql",
    "postgresql",
    "mongodb",
    "redis",
    "sqlite",
    "jdbc",
    "odbc",
    "executable",
    "input",
    "merge",
    "getsetting",
    "getmacro",
    "getserverport",
    "hostname",
}


def rewrite(sql: str, store: EventStore, project_id: int) -> str:
    """Check that ``sql`` only reads, scope it to the project and render it for the engine."""
    try:
        statements = [s for s in sqlglot.parse(sql, dialect=store.dialect) if s is not None]
    except ParseError as exc:
        raise ReadOnlyViolation(f"could not parse the query: {exc}") from None
    if len(statements) != 1:
        raise ReadOnlyViolation("give exactly one SELECT statement")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        kind = tree.key.upper()
        raise ReadOnlyViolation(f"only queries are allowed (SELECT/WITH); got {kind}")
    if tree.find(exp.Into):
        raise ReadOnlyViolation("SELECT ... INTO writes a table; only reads are allowed")
    for node in (tree, *tree.find_all(exp.Query)):
        if node.args.get("settings") or node.args.get("format"):  # ClickHouse SETTINGS / FORMAT
            raise ReadOnlyViolation("SETTINGS and FORMAT clauses are not available")

    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for func in tree.find_all(exp.Func):
        name = (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()
        if name.startswith(FORBIDDEN_FUNCTION_PREFIXES) or name in FORBIDDEN_FUNCTIONS:
            raise ReadOnlyViolation(f"function {name}() is not available in read-only SQL")

    for table in list(tree.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            raise ReadOnlyViolation(
                "table functions are not available; query events, persons or person_distinct_ids"
            )
        name = table.name.lower()
        if not table.args.get("db") and not table.args.get("catalog") and name in ctes:
            continue
        if table.args.get("db") or table.args.get("catalog") or name not in RELATIONS:
            raise ReadOnlyViolation(
                f"unknown table {table.sql(dialect=store.dialect)}: query " + ", ".join(RELATIONS)
            )
        alias = table.alias or table.name
        scoped = store.scoped(name, project_id).subquery(alias)
        table.replace(scoped)
    return tree.sql(dialect=store.dialect)


def run_readonly_sql(store: EventStore, project_id: int, sql: str) -> QueryResult:
    """Run a user's read-only query against one project and return all rows."""
    return store.query(rewrite(sql, store, project_id))
