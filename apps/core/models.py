import uuid

from django.db import models


class BaseModel(models.Model):
    """Every domain row has a public uuid (used in URLs and the API) and timestamps."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Lease(models.Model):
    """A named, expiring lock that any process can take: keeps periodic loops from overlapping."""

    name = models.CharField(max_length=64, primary_key=True)
    held_until = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


def parse_uuid(value) -> uuid.UUID | None:
    """A public id from a URL or request body, or None when it is not a uuid at all."""
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        return None
