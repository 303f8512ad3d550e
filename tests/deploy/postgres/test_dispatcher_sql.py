"""deploy/postgres/dispatcher*.sql applied for real to the PostgreSQL on 127.0.0.1:5432, in a throw-away schema.

The order is the deployment's: sql/0001 (which creates OpenSIPS's `version` table) first, then the
dispatcher table, then the lab's AI node; every step twice, because deployments re-run them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.deploy.support import DEPLOY, REPO_ROOT

PG_DSN = os.environ.get("AVC_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DIALOG_SQL = REPO_ROOT / "sql" / "0001_opensips_dialog.sql"
DISPATCHER_SQL = DEPLOY / "postgres" / "dispatcher.sql"
LAB_SQL = DEPLOY / "postgres" / "dispatcher-lab.sql"
# OpenSIPS 3.5 scripts/postgres/dispatcher-create.sql, table version 9.
EXPECTED_COLUMNS = [
    ("id", "integer", "NO"),
    ("setid", "integer", "NO"),
    ("destination", "character varying", "NO"),
    ("socket", "character varying", "YES"),
    ("state", "integer", "NO"),
    ("probe_mode", "integer", "NO"),
    ("weight", "character varying", "NO"),
    ("priority", "integer", "NO"),
    ("attrs", "character varying", "YES"),
    ("description", "character varying", "YES"),
]


@pytest.fixture
async def conn() -> AsyncIterator[Any]:
    try:
        connection = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_DSN} ({exc!r}). Start the local PostgreSQL server with trust auth "
            "for user postgres and a database named `test`, or point AVC_TEST_PG_DSN at one.",
            pytrace=False,
        )
    schema = f"deploy_dispatcher_{uuid.uuid4().hex[:12]}"
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}"')
        yield connection
    finally:
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()


async def _apply(conn: Any, *files: Any) -> None:
    for path in files:
        await conn.execute(path.read_text(encoding="utf-8"))


async def test_dispatcher_table_is_the_opensips_35_schema_and_applies_twice(conn: Any) -> None:
    await _apply(conn, DIALOG_SQL, DISPATCHER_SQL, DISPATCHER_SQL)
    columns = await conn.fetch(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'dispatcher' ORDER BY ordinal_position"
    )
    assert [tuple(row) for row in columns] == EXPECTED_COLUMNS
    versions = dict(await conn.fetch("SELECT table_name, table_version FROM version"))
    assert versions == {"dialog": 12, "dispatcher": 9}


async def test_lab_row_puts_one_ai_node_in_set_1_however_often_it_runs(conn: Any) -> None:
    await _apply(conn, DIALOG_SQL, DISPATCHER_SQL, LAB_SQL, LAB_SQL)
    rows = await conn.fetch("SELECT setid, destination, state, weight, priority FROM dispatcher")
    assert [tuple(row) for row in rows] == [(1, "sip:172.28.0.20:5070", 0, "1", 0)]


async def test_dispatcher_sql_needs_the_version_table_from_the_migrations(conn: Any) -> None:
    with pytest.raises(asyncpg.UndefinedTableError):
        await _apply(conn, DISPATCHER_SQL)
