"""Tests for banking.migrate against the real PostgreSQL: ordering, bookkeeping, idempotency, refusals.

Migrations from a temporary directory run in a throwaway schema of the session database (the DSN's
search_path points at it), so they never touch the project's own tables.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from banking.migrate import DEFAULT_DSN, SQL_DIR, MigrationError, describe_dsn, discover, main, migrate


@pytest_asyncio.fixture
async def scratch_dsn(pg_dsn: str) -> AsyncIterator[str]:
    """The session database with a fresh, empty schema first on the search_path."""
    schema = f"scratch_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield f"{pg_dsn}?search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


def write(directory: Path, name: str, sql: str) -> Path:
    path = directory / name
    path.write_text(sql, encoding="utf-8")
    return path


async def recorded(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            row["filename"]: row["sha256"] for row in await conn.fetch("SELECT filename, sha256 FROM schema_migrations")
        }
    finally:
        await conn.close()


def test_the_projects_migrations_are_numbered_and_include_the_banking_ones() -> None:
    names = [migration.filename for migration in discover(SQL_DIR)]
    assert names == sorted(names)
    assert {"0002_connector.sql", "0003_reference_bank.sql", "0004_reference_bank_seed.sql"} <= set(names)


async def test_project_migrations_are_recorded_with_their_sha256_and_a_rerun_applies_nothing(pg_dsn: str) -> None:
    expected = {m.filename: hashlib.sha256((SQL_DIR / m.filename).read_bytes()).hexdigest() for m in discover()}
    assert await recorded(pg_dsn) == expected
    report = await migrate(pg_dsn)
    assert report.applied == []
    assert report.already_applied == sorted(expected)


async def test_project_sql_files_are_idempotent_when_run_again_by_hand(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        before = await conn.fetchval("SELECT count(*) FROM bank.customers")
        for name in ("0002_connector.sql", "0003_reference_bank.sql", "0004_reference_bank_seed.sql"):
            await conn.execute((SQL_DIR / name).read_text(encoding="utf-8"))
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM bank.customers) AS customers, (SELECT count(*) FROM bank.cards) AS cards, "
            "(SELECT count(*) FROM bank.phones) AS phones, (SELECT count(*) FROM bank.transactions) AS transactions"
        )
    finally:
        await conn.close()
    assert counts["customers"] == before == 60
    assert (counts["cards"], counts["phones"], counts["transactions"]) == (65, 63, 300)


async def test_migrations_apply_in_order_once(scratch_dsn: str, tmp_path: Path) -> None:
    write(tmp_path, "0002_second.sql", "INSERT INTO steps VALUES ('second');")
    write(tmp_path, "0001_first.sql", "CREATE TABLE steps (name text); INSERT INTO steps VALUES ('first');")
    write(tmp_path, "notes.sql", "THIS IS NOT SQL;")  # not named NNNN_*.sql: ignored
    first = await migrate(scratch_dsn, tmp_path)
    second = await migrate(scratch_dsn, tmp_path)
    assert first.applied == ["0001_first.sql", "0002_second.sql"]
    assert second.applied == [] and second.already_applied == ["0001_first.sql", "0002_second.sql"]
    conn = await asyncpg.connect(scratch_dsn)
    try:
        assert [row["name"] for row in await conn.fetch("SELECT name FROM steps")] == ["first", "second"]
    finally:
        await conn.close()


async def test_a_new_file_is_applied_on_the_next_run(scratch_dsn: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE steps (name text);")
    await migrate(scratch_dsn, tmp_path)
    write(tmp_path, "0002_more.sql", "INSERT INTO steps VALUES ('more');")
    report = await migrate(scratch_dsn, tmp_path)
    assert report.applied == ["0002_more.sql"]
    assert report.already_applied == ["0001_first.sql"]


async def test_an_applied_file_that_changed_is_refused(scratch_dsn: str, tmp_path: Path) -> None:
    path = write(tmp_path, "0001_first.sql", "CREATE TABLE steps (name text);")
    await migrate(scratch_dsn, tmp_path)
    path.write_text("CREATE TABLE steps (name text, extra int);", encoding="utf-8")
    with pytest.raises(MigrationError, match=r"0001_first\.sql changed since it was applied"):
        await migrate(scratch_dsn, tmp_path)


async def test_a_failing_migration_is_rolled_back_and_not_recorded(scratch_dsn: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_ok.sql", "CREATE TABLE steps (name text);")
    write(tmp_path, "0002_broken.sql", "INSERT INTO steps VALUES ('half'); SELECT no_such_function();")
    with pytest.raises(MigrationError, match=r"0002_broken\.sql failed and was rolled back"):
        await migrate(scratch_dsn, tmp_path)
    assert set(await recorded(scratch_dsn)) == {"0001_ok.sql"}
    conn = await asyncpg.connect(scratch_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM steps") == 0
    finally:
        await conn.close()


def test_two_files_with_one_number_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "0003_a.sql", "SELECT 1;")
    write(tmp_path, "0003_b.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="share the number 0003"):
        discover(tmp_path)


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        discover(tmp_path / "nowhere")


def test_cli_migrates_and_reports(scratch_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE steps (name text);")
    assert main(["--dsn", scratch_dsn, "--sql-dir", str(tmp_path)]) == 0
    assert "1 applied, 0 already applied" in capsys.readouterr().out
    assert main(["--dsn", scratch_dsn, "--sql-dir", str(tmp_path)]) == 0
    assert "0 applied, 1 already applied" in capsys.readouterr().out


def test_cli_fails_clearly_when_the_server_is_unreachable(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"postgresql://postgres:s3cret@127.0.0.1:{closed_port}/test"
    assert main(["--dsn", dsn]) == 2
    err = capsys.readouterr().err
    assert f"cannot migrate 127.0.0.1:{closed_port}/test" in err
    assert "s3cret" not in err


def test_cli_takes_its_default_dsn_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AVC_PG_DSN", f"postgresql://postgres@127.0.0.1:{closed_port}/from_env")
    assert main([]) == 2
    assert f"127.0.0.1:{closed_port}/from_env" in capsys.readouterr().err
    assert describe_dsn(DEFAULT_DSN) == "127.0.0.1:5432/test"
