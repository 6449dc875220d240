from django.apps import apps
from django.core.management.base import BaseCommand
from django.utils.module_loading import import_string

from apps.hub.services import secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret with the first key of AXLE_ENCRYPTION_KEYS. Put the new key first, "
        "keep the old ones after it, run this, then drop the old keys."
    )

    def handle(self, *args, **options):
        count = secrets_rotate()
        # Apps that keep secrets of their own offer a secrets.rotate(), found by name like schedules.
        for config in apps.get_app_configs():
            try:
                rotate = import_string(f"{config.name}.secrets.rotate")
            except ImportError:
                continue
            count += rotate()
        self.stdout.write(f"Re-encrypted {count} secrets with the newest key.")
