"""Small shared conversions: aware datetimes, durations for messages, directory sizes."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path


def aware(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes even for timezone=True columns: they are UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def iso_utc(dt: datetime | None) -> str | None:
    """How the API writes a time: ISO 8601 in UTC with its offset ("...+00:00"), an RFC 3339
    date-time. SQLite gives naive UTC and PostgreSQL the session's zone: both end up the same."""
    return aware(dt).astimezone(UTC).isoformat() if dt is not None else None


def duration(seconds: float) -> str:
    """A time limit as a message says it: "20 seconds", "10 minutes"."""
    if seconds >= 120:
        return f"{seconds / 60:g} minutes"
    return f"{seconds:g} seconds"


def du(path: Path) -> int:
    """Bytes in the files under path; symbolic links are not followed."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total
