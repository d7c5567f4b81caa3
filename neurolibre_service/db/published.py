"""Which published version holds on to an environment or a dataset (they never change)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Publication, PublishedVersion, published_datasets


async def first_version_using(
    s: AsyncSession, *, environment_id: int | None = None, dataset_key: str | None = None
) -> tuple[str, int] | None:
    """(slug, version number) of the first published version on that environment or with that
    dataset, or None."""
    query = select(Publication.slug, PublishedVersion.version).join(
        Publication, Publication.id == PublishedVersion.publication_id
    )
    if environment_id is not None:
        query = query.where(PublishedVersion.environment_id == environment_id)
    if dataset_key is not None:
        query = query.join(
            published_datasets, published_datasets.c.version_id == PublishedVersion.id
        ).where(published_datasets.c.dataset_key == dataset_key)
    row = (await s.execute(query.order_by(PublishedVersion.id).limit(1))).first()
    return None if row is None else (row[0], row[1])
