import uuid

from django.db import models


class BaseModel(models.Model):
    """Every domain row has a public uuid (used in URLs and the API) and timestamps."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
