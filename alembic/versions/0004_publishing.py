"""submit, review, publish: reviews, their events and reviewers; publications and their
immutable versions

A published version never changes: besides the code (which has no path that updates or deletes
one), triggers refuse an UPDATE or DELETE of published_versions and published_datasets on
SQLite and PostgreSQL alike, so neither a bug nor a hand-typed SQL statement can rewrite one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

IMMUTABLE = ("published_versions", "published_datasets")
MESSAGE = "published versions are immutable"


def _triggers() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for table in IMMUTABLE:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
                )
    elif bind.dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION neurolibre_immutable() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$"
        )
        for table in IMMUTABLE:
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION neurolibre_immutable()"
            )


def _drop_triggers() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for table in IMMUTABLE:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    elif bind.dialect.name == "postgresql":
        for table in IMMUTABLE:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
        op.execute("DROP FUNCTION IF EXISTS neurolibre_immutable()")


def upgrade() -> None:
    op.create_table(
        "publications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column("preprint_id", sa.Integer(), nullable=True),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("repo_url", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["preprint_id"], ["preprints.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("preprint_id"),
        sa.UniqueConstraint("slug"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "review_assignments",
        sa.Column("preprint_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("assigned_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["preprint_id"], ["preprints.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("preprint_id", "reviewer"),
    )
    with op.batch_alter_table("review_assignments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_review_assignments_reviewer"), ["reviewer"], unique=False
        )

    op.create_table(
        "review_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("preprint_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=True),
        sa.Column("build_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("reply_to", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["preprint_id"], ["preprints.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("review_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_review_events_preprint_id"), ["preprint_id"], unique=False
        )

    op.create_table(
        "published_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("publication_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("commit_sha", sa.String(length=64), nullable=False),
        sa.Column("runtime_key", sa.String(length=64), nullable=False),
        sa.Column("runtime_backend", sa.String(length=32), nullable=False),
        sa.Column("runtime_location", sa.Text(), nullable=False),
        sa.Column("python_version", sa.String(length=16), nullable=True),
        sa.Column("environment_id", sa.Integer(), nullable=True),
        sa.Column("book_engine", sa.String(length=32), nullable=True),
        sa.Column("book_sha256", sa.String(length=64), nullable=False),
        sa.Column("book_files", sa.Integer(), nullable=False),
        sa.Column("book_bytes", sa.BigInteger(), nullable=False),
        sa.Column("datasets", sa.JSON(), nullable=False),
        sa.Column("runtime_files", sa.JSON(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("published_by", sa.String(length=255), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["publication_id"],
            ["publications.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("published_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_published_versions_environment_id"), ["environment_id"], unique=False
        )
        batch_op.create_index(
            "ix_published_versions_publication_version", ["publication_id", "version"], unique=True
        )
        batch_op.create_index(
            batch_op.f("ix_published_versions_runtime_key"), ["runtime_key"], unique=False
        )

    op.create_table(
        "published_datasets",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("dataset_key", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["published_versions.id"],
        ),
        sa.PrimaryKeyConstraint("version_id", "dataset_key"),
    )
    with op.batch_alter_table("published_datasets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_published_datasets_dataset_key"), ["dataset_key"], unique=False
        )

    op.create_table(
        "reviews",
        sa.Column("preprint_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["preprint_id"], ["preprints.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("preprint_id"),
    )
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reviews_status"), ["status"], unique=False)
    _triggers()


def downgrade() -> None:
    _drop_triggers()
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reviews_status"))

    op.drop_table("reviews")
    with op.batch_alter_table("published_datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_published_datasets_dataset_key"))

    op.drop_table("published_datasets")
    with op.batch_alter_table("published_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_published_versions_runtime_key"))
        batch_op.drop_index("ix_published_versions_publication_version")
        batch_op.drop_index(batch_op.f("ix_published_versions_environment_id"))

    op.drop_table("published_versions")
    with op.batch_alter_table("review_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_events_preprint_id"))

    op.drop_table("review_events")
    with op.batch_alter_table("review_assignments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_assignments_reviewer"))

    op.drop_table("review_assignments")
    op.drop_table("publications")
