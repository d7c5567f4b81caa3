"""SQL store: models, async engine, and migrations."""

from .engine import Database
from .models import (
    Base,
    Build,
    Dataset,
    Environment,
    Job,
    JobStatus,
    Preprint,
    Publication,
    PublishedVersion,
    Review,
    ReviewAssignment,
    ReviewEvent,
    Runtime,
    published_datasets,
)

__all__ = [
    "Base",
    "Build",
    "Database",
    "Dataset",
    "Environment",
    "Job",
    "JobStatus",
    "Preprint",
    "Publication",
    "PublishedVersion",
    "Review",
    "ReviewAssignment",
    "ReviewEvent",
    "Runtime",
    "published_datasets",
]
