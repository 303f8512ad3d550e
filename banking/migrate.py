"""Apply the ordered SQL migrations in `sql/` to a PostgreSQL database: `python -m banking.migrate --dsn ...`.

Each file `NNNN_name.sql` runs once, in order, inside its own transaction, and is recorded in
`schema_migrations` with its SHA-256. Running again applies only what is new. A recorded file whose
content changed is an error, never silently re-run: the database would no longer match the file.
Several nodes starting at once are serialised by a PostgreSQL advisory lock.

Migration files must be able to run inside a transaction (so no CREATE INDEX CONCURRENTLY) and are
written idempotent (IF NOT EXISTS, ON CONFLICT DO NOTHING) so that a half-known state can be repaired
by hand by running them again.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import asyncpg

log = logging.getLogger("banking.migrate")  # not __name__: that is "__main__" under python -m

DEFAULT_DSN: Final = "postgresql://postgres@127.0.0.1:5432/test"
DSN_ENV: Final = "AVC_PG_DSN"
SQL_DIR: Final = Path(__file__).resolve().parent.parent / "sql"
CONNECT_TIMEOUT_S: Final = 10.0
# Any fixed 64-bit number works; this one is "avc-migr" in ASCII, unlikely to collide with another app's lock.
_ADVISORY_LOCK_KEY: Final = 0x6176632D6D696772
_FILE_RE: Final = re.compile(r"(?P<number>\d{4})_[A-Za-z0-9_]+\.sql")

_BOOKKEEPING_SQL: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    filename   text PRIMARY KEY,
    sha256     text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The migration files or the database's record of them are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    filename: str
    sha256: str
    sql: str


@dataclass(slots=True)
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    already_applied: list[str] = field(default_factory=list)


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """The migrations in `sql_dir`, in order. Two files with one number is an error (a merge gone wrong)."""
    if not sql_dir.is_dir():
        raise MigrationError(f"migration directory {sql_dir} does not exist")
    migrations: list[Migration] = []
    numbers: dict[str, str] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        match = _FILE_RE.fullmatch(path.name)
        if match is None:
            log.warning("ignoring %s: migration files are named NNNN_name.sql", path.name)
            continue
        if (other := numbers.setdefault(match["number"], path.name)) != path.name:
            raise MigrationError(f"{other} and {path.name} share the number {match['number']}")
        data = path.read_bytes()
        try:
            sql = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MigrationError(f"{path.name} is not UTF-8: {exc}") from exc
        migrations.append(Migration(path.name, hashlib.sha256(data).hexdigest(), sql))
    return migrations


async def apply_migrations(conn: asyncpg.Connection, migrations: Sequence[Migration]) -> MigrationReport:
    """Apply what `schema_migrations` does not record yet; raise `MigrationError` for an edited file."""
    report = MigrationReport()
    await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_BOOKKEEPING_SQL)
        rows = await conn.fetch("SELECT filename, sha256 FROM schema_migrations")
        recorded: dict[str, str] = {row["filename"]: row["sha256"] for row in rows}
        for migration in migrations:
            known = recorded.get(migration.filename)
            if known == migration.sha256:
                report.already_applied.append(migration.filename)
                continue
            if known is not None:
                raise MigrationError(
                    f"{migration.filename} changed since it was applied (sha256 {known[:12]}... is now "
                    f"{migration.sha256[:12]}...): add a new migration instead of editing an applied one"
                )
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (filename, sha256) VALUES ($1, $2)",
                        migration.filename,
                        migration.sha256,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.filename} failed and was rolled back: {exc}") from exc
            log.info("applied migration %s", migration.filename)
            report.applied.append(migration.filename)
    finally:
        # A broken connection has released its session lock already; that must not hide the real error.
        with suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
    return report


async def migrate(dsn: str, sql_dir: Path = SQL_DIR) -> MigrationReport:
    """Connect to `dsn` and apply the migrations found in `sql_dir`."""
    migrations = discover(sql_dir)
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        return await apply_migrations(conn, migrations)
    finally:
        await conn.close()


def describe_dsn(dsn: str) -> str:
    """`host:port/database` of a DSN, for messages: never the password."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m banking.migrate", description="Apply sql/NNNN_*.sql in order.")
    parser.add_argument(
        "--dsn",
        default=os.environ.get(DSN_ENV, DEFAULT_DSN),
        help=f"PostgreSQL DSN (default: ${DSN_ENV}, else {DEFAULT_DSN})",
    )
    parser.add_argument("--sql-dir", type=Path, default=SQL_DIR, help=f"migration files (default: {SQL_DIR})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")  # the report is printed
    where = describe_dsn(args.dsn)
    try:
        report = asyncio.run(migrate(args.dsn, args.sql_dir))
    except MigrationError as exc:
        print(f"migration failed on {where}: {exc}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"cannot migrate {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"{where}: {len(report.applied)} applied, {len(report.already_applied)} already applied")
    for filename in report.applied:
        print(f"  applied {filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
