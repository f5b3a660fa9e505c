"""An in-memory copy of part of the store, for dry runs: the same schema, only the rows
asked for. What runs against it can write freely; the real file is never touched."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import sqlite_utils

# A filter's values go in chunks this size (SQLite's default limit is 32,766 parameters).
CHUNK = 500


def empty_copy(db: sqlite_utils.Database) -> sqlite_utils.Database:
    """A new in-memory database with every table and index of `db`, and no rows."""
    copy = sqlite_utils.Database(sqlite3.connect(":memory:", isolation_level=None))
    schema = db.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
        " ORDER BY type = 'index', rowid"
    ).fetchall()
    for (sql,) in schema:
        copy.execute(sql)
    return copy


def copy_rows(
    source: sqlite_utils.Database,
    target: sqlite_utils.Database,
    table: str,
    column: str | None = None,
    values: Sequence[object] = (),
) -> None:
    """Copy `table`'s rows whose `column` is among `values`, or all of them (no column)."""
    if column is None:
        _insert(source, target, table, f"SELECT * FROM [{table}]", [])
        return
    wanted = list(dict.fromkeys(values))
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        query = f"SELECT * FROM [{table}] WHERE [{column}] IN ({marks})"
        _insert(source, target, table, query, chunk)


def _insert(
    source: sqlite_utils.Database,
    target: sqlite_utils.Database,
    table: str,
    query: str,
    params: list[object],
) -> None:
    cursor = source.execute(query, params)
    names = ", ".join(f"[{d[0]}]" for d in cursor.description)
    marks = ", ".join("?" * len(cursor.description))
    target.conn.executemany(f"INSERT INTO [{table}] ({names}) VALUES ({marks})", cursor)
