"""Every schema change is a migration: upgrading an empty database gives the models' schema."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from neurolibre_service.db.engine import make_engine
from neurolibre_service.db.models import Base


def schema_diff(url: str, metadata=Base.metadata) -> list:
    """What alembic would change to turn the database into the models (same drivers as the service)."""

    async def compare() -> list:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), metadata))  # fmt: skip
        finally:
            await engine.dispose()

    return asyncio.run(compare())


def upgrade_with_cli(url: str) -> None:
    out = subprocess.run([sys.executable, "-m", "neurolibre_service.cli", "db", "upgrade",
                          "--db-url", url], capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "database is at revision head" in out.stdout


def test_migrations_match_the_models_on_sqlite(tmp_path):
    path = tmp_path / "nl.sqlite"
    upgrade_with_cli(f"sqlite:///{path}")
    assert schema_diff(f"sqlite:///{path}") == []


def test_migrations_match_the_models_on_postgresql(postgres):
    url = postgres.create_database(f"nl_migrations_{time.time_ns()}")
    upgrade_with_cli(url)
    assert schema_diff(url) == []


def test_a_changed_model_without_migration_is_detected(tmp_path):
    """The comparison above would notice a column missing from the migrations."""
    from sqlalchemy import Column, MetaData, String, Table

    path = tmp_path / "nl.sqlite"
    upgrade_with_cli(f"sqlite:///{path}")
    meta = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(meta)
    Table("environments", meta, Column("extra", String(10)), extend_existing=True)
    diff = schema_diff(f"sqlite:///{path}", meta)
    assert [d[0] for d in diff] == ["add_column"]


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# -- ids are never reused (0003) ---------------------------------------------------------------

ROWS = {  # one row per table with an integer id, in the order foreign keys need
    "environments": "INSERT INTO environments (name, owner, repo_url, ref, created_at) "
                    "VALUES (:tag, 'alice', 'https://example.org/r.git', 'main', :now)",
    "jobs": "INSERT INTO jobs (kind, owner, status, environment_id, params, attempts, created_at) "
            "VALUES ('environment', 'alice', 'succeeded', (SELECT max(id) FROM environments), "
            "'{}', 0, :now)",
    "preprints": "INSERT INTO preprints (owner, repo_url, ref, created_at) "
                 "VALUES ('alice', :tag, 'main', :now)",
    "builds": "INSERT INTO builds (preprint_id, job_id, ref, stages, created_at) VALUES "
              "((SELECT max(id) FROM preprints), (SELECT max(id) FROM jobs), 'main', '{}', :now)",
}  # fmt: skip


def ids_after_deleting_the_last(url: str) -> dict[str, tuple[int, int]]:
    """For each table: (id of a deleted last row, id of the row inserted next), through the
    service's own engine (SQLite with foreign keys on)."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    async def run() -> dict[str, tuple[int, int]]:
        engine = make_engine(url)
        now = datetime.now(UTC)
        out = {}
        try:
            async with engine.begin() as conn:
                for table, insert in ROWS.items():
                    await conn.execute(text(insert), {"tag": f"{table}-doomed", "now": now})
                # children first: deleting a parent would cascade to them
                for table in reversed(ROWS):
                    last = await conn.scalar(text(f"SELECT max(id) FROM {table}"))  # noqa: S608
                    await conn.execute(text(f"DELETE FROM {table} WHERE id = :id"), {"id": last})  # noqa: S608
                    out[table] = last
                for table, insert in ROWS.items():
                    await conn.execute(text(insert), {"tag": f"{table}-new", "now": now})
                    new = await conn.scalar(text(f"SELECT max(id) FROM {table}"))  # noqa: S608
                    out[table] = (out[table], new)
        finally:
            await engine.dispose()
        return out

    return asyncio.run(run())


def fill_at_0002(url: str) -> None:
    """A database at revision 0002 with a row in each table, as a running service leaves it."""
    from neurolibre_service.db.engine import upgrade

    upgrade(url, "0002")
    from datetime import UTC, datetime

    from sqlalchemy import text

    async def run() -> None:
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                for table, insert in ROWS.items():
                    await conn.execute(
                        text(insert), {"tag": f"{table}-old", "now": datetime.now(UTC)}
                    )
        finally:
            await engine.dispose()

    asyncio.run(run())


def check_ids_are_never_reused(url: str) -> None:
    fill_at_0002(url)
    upgrade_with_cli(url)
    assert schema_diff(url) == []
    ids = ids_after_deleting_the_last(url)
    for table, (deleted, new) in ids.items():
        assert new > deleted, f"{table}: id {deleted} was deleted and given again"

    async def survivors() -> tuple[list, list]:
        from sqlalchemy import text

        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                names = (
                    await conn.execute(text("SELECT name FROM environments ORDER BY id"))
                ).all()
                # the recreated tables kept their foreign keys: a deleted environment takes its jobs
                env = await conn.scalar(text("SELECT min(id) FROM environments"))
                await conn.execute(text("DELETE FROM environments WHERE id = :id"), {"id": env})
                orphans = (await conn.execute(text(
                    "SELECT id FROM jobs WHERE environment_id = :id"), {"id": env})).all()  # fmt: skip
        finally:
            await engine.dispose()
        return [n for (n,) in names], orphans

    names, orphans = asyncio.run(survivors())
    assert names == ["environments-old", "environments-new"]  # the rows from before survived
    assert orphans == []


def test_ids_are_never_reused_on_sqlite(tmp_path):
    """A row deleted as the newest gave its id to the next row: alice's servers then ran on
    an environment id that had become admin's."""
    check_ids_are_never_reused(f"sqlite:///{tmp_path / 'nl.sqlite'}")


def test_ids_are_never_reused_on_postgresql(postgres):
    check_ids_are_never_reused(postgres.create_database(f"nl_ids_{time.time_ns()}"))
