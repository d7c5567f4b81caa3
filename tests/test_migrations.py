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
