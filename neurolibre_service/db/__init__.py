"""SQL store: models, async engine, and migrations."""

from .engine import Database
from .models import Base, Environment, Job, JobStatus, Runtime

__all__ = ["Base", "Database", "Environment", "Job", "JobStatus", "Runtime"]
