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
