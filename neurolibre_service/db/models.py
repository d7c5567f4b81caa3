"""The SQL schema. Every change here needs an alembic migration (tests compare the two)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Runtime(Base):
    """A built environment, shared by every Environment whose runtime files hash the same."""

    __tablename__ = "runtimes"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    backend: Mapped[str] = mapped_column(String(32))
    # venv directory for the local builder, image name for docker/binderhub
    location: Mapped[str] = mapped_column(Text)
    python_version: Mapped[str | None] = mapped_column(String(16))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Environment(Base):
    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(255), index=True)
    repo_url: Mapped[str] = mapped_column(Text)
    ref: Mapped[str] = mapped_column(String(255))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    profile: Mapped[str | None] = mapped_column(String(100))
    cpu_limit: Mapped[float | None] = mapped_column(Float)
    mem_limit: Mapped[str | None] = mapped_column(String(32))
    runtime_key: Mapped[str | None] = mapped_column(
        ForeignKey("runtimes.key", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    runtime: Mapped[Runtime | None] = relationship(lazy="joined")
    jobs: Mapped[list[Job]] = relationship(
        back_populates="environment",
        order_by="Job.id",
        passive_deletes=True,
    )

    __table_args__ = (
        Index("ix_environments_owner_name", "owner", "name", unique=True),
        # ids are never reused (a server, link or log names one): see migration 0003
        {"sqlite_autoincrement": True},
    )


class Job(Base):
    """A durable unit of work (an environment build, later a preprint build)."""

    __tablename__ = "jobs"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=False, length=16),
        default=JobStatus.queued,
        index=True,
    )
    environment_id: Mapped[int | None] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    # what the UI shows while it runs: the current step, e.g. "cloning", "installing"
    stage: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # the process group leader of the running step, to kill orphans after a crash
    pid: Mapped[int | None] = mapped_column(Integer)
    pid_start: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    environment: Mapped[Environment | None] = relationship(back_populates="jobs")


class Dataset(Base):
    """A dataset fetched by repo2data, shared by every build whose requirement hashes the same."""

    __tablename__ = "datasets"

    # sha256 of the dataset's requirement (canonical JSON, without "dst")
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_name: Mapped[str] = mapped_column(String(100))
    requirement: Mapped[dict] = mapped_column(JSON)
    # "fetching", "ready" or "failed"
    status: Mapped[str] = mapped_column(String(16), default="fetching")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    fetched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


build_datasets = Table(
    "build_datasets",
    Base.metadata,
    Column("build_id", ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "dataset_key", ForeignKey("datasets.key", ondelete="CASCADE"), primary_key=True, index=True
    ),
)


class Preprint(Base):
    """A repository an author submitted; each submission of it is a Build."""

    __tablename__ = "preprints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    repo_url: Mapped[str] = mapped_column(Text)
    ref: Mapped[str] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    builds: Mapped[list[Build]] = relationship(
        back_populates="preprint", order_by="Build.id", passive_deletes=True
    )

    # resubmitting a repository adds a build to its preprint
    __table_args__ = (
        Index("ix_preprints_owner_repo", "owner", "repo_url", unique=True),
        {"sqlite_autoincrement": True},
    )


class Build(Base):
    """One run of the pipeline (check, environment, data, book) for a preprint at a commit."""

    __tablename__ = "builds"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    preprint_id: Mapped[int] = mapped_column(
        ForeignKey("preprints.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    ref: Mapped[str] = mapped_column(String(255))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    runtime_key: Mapped[str | None] = mapped_column(
        ForeignKey("runtimes.key", ondelete="SET NULL"), index=True
    )
    # the layout check's findings, as dicts (level, file, line, message, fix)
    findings: Mapped[list | None] = mapped_column(JSON)
    # stage name -> "pending", "running", "succeeded", "failed", "skipped"
    stages: Mapped[dict] = mapped_column(JSON, default=dict)
    failed_stage: Mapped[str | None] = mapped_column(String(32))
    # "jupyter-book" (Jupyter Book 1) or "myst"
    book_engine: Mapped[str | None] = mapped_column(String(32))
    # executed notebooks and those taken from the execution cache, for the page and benchmarks
    executed: Mapped[int | None] = mapped_column(Integer)
    cached: Mapped[int | None] = mapped_column(Integer)
    notified: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    preprint: Mapped[Preprint] = relationship(back_populates="builds")
    job: Mapped[Job] = relationship(lazy="joined")
    datasets: Mapped[list[Dataset]] = relationship(secondary=build_datasets, lazy="selectin")


# -- submit, review, publish (issue 14; migration 0004) -----------------------------------------


class Review(Base):
    """The editorial state of a preprint's current submission (one row per submitted preprint)."""

    __tablename__ = "reviews"

    preprint_id: Mapped[int] = mapped_column(
        ForeignKey("preprints.id", ondelete="CASCADE"), primary_key=True
    )
    # submitted, in_review, changes_requested, published, rejected, withdrawn (publishing.py)
    status: Mapped[str] = mapped_column(String(32), index=True)
    # the build under review: the one an accept publishes
    build_id: Mapped[int | None] = mapped_column(ForeignKey("builds.id", ondelete="SET NULL"))
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewEvent(Base):
    """Every transition and comment of a preprint's review: who, when, from -> to, what was said.
    Rows are only ever added."""

    __tablename__ = "review_events"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    preprint_id: Mapped[int] = mapped_column(
        ForeignKey("preprints.id", ondelete="CASCADE"), index=True
    )
    actor: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # author, editor, reviewer, admin
    kind: Mapped[str] = mapped_column(String(32))  # submit, screen, comment, accept, ...
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    build_id: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[int | None] = mapped_column(Integer)  # the version an accept published
    reply_to: Mapped[int | None] = mapped_column(Integer)  # the comment an answer answers
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewAssignment(Base):
    """A reviewer (a hub user) assigned to a preprint, with an optional address for emails
    (the hub keeps none)."""

    __tablename__ = "review_assignments"

    preprint_id: Mapped[int] = mapped_column(
        ForeignKey("preprints.id", ondelete="CASCADE"), primary_key=True
    )
    reviewer: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    assigned_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Publication(Base):
    """A published preprint: its slug, stable and never reused. It outlives the preprint row
    (preprint_id becomes NULL): what was published stays published."""

    __tablename__ = "publications"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    preprint_id: Mapped[int | None] = mapped_column(
        ForeignKey("preprints.id", ondelete="SET NULL"), unique=True
    )
    owner: Mapped[str] = mapped_column(String(255))
    repo_url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PublishedVersion(Base):
    """Version N of a publication: everything pinned at publish. Never updated or deleted
    (migration 0004's triggers refuse both); its files are DATA/published/<slug>/v<N>/."""

    __tablename__ = "published_versions"
    __table_args__ = (
        Index(
            "ix_published_versions_publication_version", "publication_id", "version", unique=True
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    publication_id: Mapped[int] = mapped_column(ForeignKey("publications.id"))
    version: Mapped[int] = mapped_column(Integer)
    # provenance, not foreign keys: the version keeps its values whatever happens to the rows
    build_id: Mapped[int] = mapped_column(Integer)
    commit_sha: Mapped[str] = mapped_column(String(64))
    runtime_key: Mapped[str] = mapped_column(String(64), index=True)
    runtime_backend: Mapped[str] = mapped_column(String(32))
    runtime_location: Mapped[str] = mapped_column(Text)
    python_version: Mapped[str | None] = mapped_column(String(16))
    # the environment a launch uses (deleting it is refused while this version exists)
    environment_id: Mapped[int | None] = mapped_column(Integer, index=True)
    book_engine: Mapped[str | None] = mapped_column(String(32))
    book_sha256: Mapped[str] = mapped_column(String(64))
    book_files: Mapped[int] = mapped_column(Integer)
    book_bytes: Mapped[int] = mapped_column(BigInteger)
    # [{key, project_name, source, size_bytes, files, sha256}]
    datasets: Mapped[list] = mapped_column(JSON)
    # [{name, size_bytes, sha256}] of the runtime files (their text is on disk)
    runtime_files: Mapped[list] = mapped_column(JSON)
    # title, authors (name, orcid, affiliations), affiliations, summary, keywords, date, license
    meta: Mapped[dict] = mapped_column(JSON)
    title: Mapped[str] = mapped_column(Text)
    # lower-cased title, authors and keywords: what the gallery's search looks in
    search_text: Mapped[str] = mapped_column(Text)
    published_by: Mapped[str] = mapped_column(String(255))
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


published_datasets = Table(
    "published_datasets",
    Base.metadata,
    Column("version_id", ForeignKey("published_versions.id"), primary_key=True),
    # no foreign key: deleting a dataset a version holds is refused (DatasetStore.delete)
    Column("dataset_key", String(64), primary_key=True, index=True),
)
