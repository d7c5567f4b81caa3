"""ids never reused: AUTOINCREMENT on SQLite

Without AUTOINCREMENT SQLite hands a deleted row's id to the next row when it was the largest:
a server started on environment 7 then ran on someone else's new environment 7, and a new
build's preview or log could take a deleted one's id. PostgreSQL sequences never go back, so
there is nothing to do there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# parents first; the tables whose integer ids other rows, files and URLs refer to
TABLES = ("environments", "jobs", "preprints", "builds")


def _recreate(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    # a recreate drops each old table: with foreign keys enforced that would cascade-delete
    # its children (alembic's env connects without the service's PRAGMA foreign_keys=ON)
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("Run this migration with SQLite foreign keys off.")
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass


def upgrade() -> None:
    _recreate(True)


def downgrade() -> None:
    _recreate(False)
