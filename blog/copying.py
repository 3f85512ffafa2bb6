"""python run.py copy: every user and post to another database, checked before a
row is written and verified after."""

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    RowMapping,
    String,
    Table,
    Text,
    cast,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import sqlite

from database_safety import DatabaseProblem, shown, sqlite_path, value_columns

from .maintenance import check_database, init_db
from .models import BODY_MAX_BYTES, Base

# Users before the posts that name them. Sessions and failed logins belong to
# the database they were made on: they stay behind.
COPIED_TABLES = (Base.metadata.tables["user"], Base.metadata.tables["post"])
# The servers' INTEGER, which the models' ids are there; SQLite's holds 64 bits.
SERVER_INTEGER = (-(2**31), 2**31 - 1)
DIALECT_NAMES = {"postgresql": "PostgreSQL", "mysql": "MariaDB", "sqlite": "SQLite"}


@dataclass(frozen=True)
class Copied:
    """What a copy moved, table by table, and where."""

    source: str
    target: str
    counts: dict[str, int]

    def __str__(self) -> str:
        users, posts = self.counts["user"], self.counts["post"]
        return (
            f"Copied {users:,} user{'s' * (users != 1)} and {posts:,} post{'s' * (posts != 1)} "
            f"from {self.source} to {self.target}, and verified them: the same row count "
            "and checksum in each table"
        )


def copy_database(
    source: Engine,
    target: Engine,
    scripts: ScriptDirectory,
    progress: Callable[[str], None],
    batch_size: int = 1000,
    dry_run: bool = False,
) -> Copied | None:
    """Copy every user and post to another database, keeping their ids.

    Every value is first checked against what the target can store; any that
    cannot go are listed in one DatabaseProblem and nothing is written (a dry
    run stops there). The target gets the current schema if it has no tables;
    otherwise it must be at the latest revision and hold no users or posts.
    Rows go over in batches of batch_size, all in one transaction on the
    target, so a failed copy leaves nothing half-done there. Afterwards both
    sides are read again and compared, table by table.
    """
    check_database(source, scripts)
    problems = values_the_target_cannot_store(source, target.dialect.name, batch_size)
    if problems:
        raise DatabaseProblem(
            f"{len(problems):,} value{'s' * (len(problems) != 1)} in {shown(source.url)} "
            f"cannot be stored in {DIALECT_NAMES[target.dialect.name]}; nothing was copied. "
            "Correct them in the source, then copy again:\n  " + "\n  ".join(problems)
        )
    target_path = sqlite_path(target.url)
    # (Inspecting a missing SQLite file would create it, and init would back it up.)
    empty = (target_path and not target_path.exists()) or not inspect(target).get_table_names()
    if not empty:
        check_database(target, scripts)
        with target.connect() as connection:
            refuse_a_target_with_rows(connection)
    if dry_run:
        return None
    if empty:
        init_db(target, scripts)
    with source.connect() as reader, target.begin() as writer:
        refuse_a_target_with_rows(writer)  # (again: it may have changed since)
        for table in COPIED_TABLES:
            total = reader.scalar(select(func.count()).select_from(table))
            copied = 0
            for rows in batches(reader, table, batch_size):
                writer.execute(table.insert(), [dict(row) for row in rows])
                copied += len(rows)
                progress(f"{table.name}: copied {copied:,} of {total:,}")
            if writer.dialect.name == "postgresql":
                # Explicit ids do not move PostgreSQL's sequence; new rows would collide.
                name = writer.dialect.identifier_preparer.format_table(table)
                writer.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence(:name, 'id'), "
                        f"coalesce(max(id), 0) + 1, false) FROM {name}"
                    ),
                    {"name": name},
                )
    return Copied(shown(source.url), shown(target.url), verify(source, target, batch_size))


def refuse_a_target_with_rows(connection: Connection) -> None:
    for table in COPIED_TABLES:
        if connection.scalar(select(func.count()).select_from(table)):
            raise DatabaseProblem(
                f"the target already has rows in {table.name}; copy into an empty database"
            )


def batches(
    connection: Connection, table: Table, size: int, raw: bool = False
) -> Iterator[Sequence[RowMapping]]:
    """The table's rows in id order, size at a time, as mappings of the models'
    columns that the database has (a source may have others).

    raw: as SQLite holds them. It keeps whatever was written, in any column:
    its text and dates come as bytes, to be checked here rather than fail in
    the driver or in SQLAlchemy's date parser.
    """
    names = [name for name in value_columns(connection, table.name) if name in table.c]
    as_bytes = raw and connection.dialect.name == "sqlite"
    columns = [
        cast(table.c[name], LargeBinary).label(name)
        if as_bytes and not isinstance(table.c[name].type, Integer)
        else table.c[name]
        for name in names
    ]
    last_id = None
    while True:
        query = select(*columns).order_by(table.c.id).limit(size)
        if last_id is not None:
            query = query.where(table.c.id > last_id)
        rows = connection.execute(query).mappings().all()
        if not rows:
            return
        yield rows
        last_id = rows[-1]["id"]


def values_the_target_cannot_store(source: Engine, dialect_name: str, batch_size: int) -> list[str]:
    """Each value of the source that the target would refuse, or that would stop
    the copy half-way, as "table id column: why", in table and id order."""
    problems = []
    ids: dict[str, set[int]] = {}
    with source.connect() as connection:
        for table in COPIED_TABLES:
            ids[table.name] = set()
            usernames: dict[str, tuple[int, str]] = {}
            for rows in batches(connection, table, batch_size, raw=True):
                for row in rows:
                    ids[table.name].add(row["id"])
                    for name, value in row.items():
                        why = why_not_storable(value, table.c[name], dialect_name, ids)
                        if name == "username" and why is None:
                            why = same_but_for_case(row["id"], value, usernames, dialect_name)
                        if why:
                            problems.append(f"{table.name} {row['id']} {name}: {why}")
    return problems


# How SQLAlchemy reads a date from SQLite, where it is text.
SQLITE_DATETIME_READER = sqlite.DATETIME().result_processor(sqlite.dialect(), None)


def read_sqlite_datetime(stored: str) -> datetime | None:
    """The date that SQLAlchemy would read; ValueError for text it cannot read."""
    read = SQLITE_DATETIME_READER
    assert read is not None  # SQLite keeps dates as text
    return read(stored)


def why_not_storable(
    value: object, column: Column, dialect_name: str, ids: dict[str, set[int]]
) -> str | None:
    """Why the target cannot take this value for this column, or None."""
    target = DIALECT_NAMES[dialect_name]
    if value is None:
        return None if column.nullable else "empty (NULL), and the column requires a value"
    if isinstance(column.type, Integer):
        if not isinstance(value, int):
            return f"{value!r} is not a whole number"
        low, high = SERVER_INTEGER
        if dialect_name != "sqlite" and not low <= value <= high:
            return f"{value:,} is beyond {target}'s INTEGER ({low:,} to {high:,})"
        for foreign_key in column.foreign_keys:
            referred = foreign_key.column.table.name
            if value not in ids.get(referred, {value}):
                return f"names {referred} {value}, which does not exist"
        return None
    written = value if isinstance(value, bytes) else str(value).encode()
    try:
        decoded = written.decode()
    except UnicodeDecodeError as error:
        return f"not valid UTF-8 (byte {written[error.start]:#04x} at byte {error.start:,})"
    if isinstance(column.type, DateTime):
        if isinstance(value, datetime):
            return None  # a server's date, read already
        try:
            read_sqlite_datetime(decoded)
        except ValueError:
            return f"{decoded!r} is not a date and time of years 1 to 9999"
        return None
    if dialect_name == "postgresql" and "\x00" in decoded:
        return "holds a NUL character, which PostgreSQL cannot store in text"
    if dialect_name == "sqlite":
        return None  # SQLite holds text of any length
    length = column.type.length if isinstance(column.type, String) else None
    if length and len(decoded) > length:
        return f"{len(decoded):,} characters long; the limit is {length:,}"
    if isinstance(column.type, Text) and dialect_name == "mysql" and len(written) > BODY_MAX_BYTES:
        return f"{len(written):,} bytes in UTF-8; MariaDB's TEXT holds {BODY_MAX_BYTES:,}"
    return None


ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def same_but_for_case(
    user_id: int, username: bytes | str, seen: dict[str, tuple[int, str]], dialect_name: str
) -> str | None:
    """Whether an earlier user's name differs from this one only in case, as the
    target's lower(username) sees it (SQLite's lowers only ASCII letters)."""
    name = username.decode() if isinstance(username, bytes) else username
    key = name.lower() if dialect_name != "sqlite" else name.translate(ASCII_LOWER)
    if key in seen:
        other_id, other = seen[key]
        return f"{name!r} differs only in case from user {other_id}'s {other!r}"
    seen[key] = (user_id, name)
    return None


def verify(source: Engine, target: Engine, batch_size: int) -> dict[str, int]:
    """Each copied table's row count, after checking that the target's rows
    count and hash the same as the source's; raises DatabaseProblem if not."""
    # MariaDB's DATETIME keeps whole seconds: compare times to the second there.
    whole_seconds = "mysql" in (source.dialect.name, target.dialect.name)
    counts = {}
    with source.connect() as one, target.connect() as other:
        for table in COPIED_TABLES:
            mine = checksum(one, table, batch_size, whole_seconds)
            theirs = checksum(other, table, batch_size, whole_seconds)
            if mine != theirs:
                raise DatabaseProblem(
                    f"the copy of {table.name} differs from the source: {mine[0]:,} rows "
                    f"(checksum {mine[1][:12]}) in the source, {theirs[0]:,} (checksum "
                    f"{theirs[1][:12]}) in the target"
                )
            counts[table.name] = mine[0]
    return counts


def checksum(
    connection: Connection, table: Table, batch_size: int, whole_seconds: bool
) -> tuple[int, str]:
    """The table's row count and a SHA-256 of its rows in id order, each value
    as Python reads it, so that every backend computes it the same way."""
    digest, count = hashlib.sha256(), 0
    for rows in batches(connection, table, batch_size):
        for row in rows:
            values = [row[column.name] for column in table.c if column.name in row]
            if whole_seconds:
                values = [
                    value.replace(microsecond=0) if isinstance(value, datetime) else value
                    for value in values
                ]
            digest.update(repr(values).encode() + b"\n")
        count += len(rows)
    return count, digest.hexdigest()
