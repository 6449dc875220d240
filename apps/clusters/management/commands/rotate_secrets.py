from django.core.management.base import BaseCommand

from apps.clusters.services import secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret with the first key of AXLE_ENCRYPTION_KEYS. Put the new key first, "
        "keep the old ones after it, run this, then drop the old keys."
    )

    def handle(self, *args, **options):
        count = secrets_rotate()
        self.stdout.write(f"Re-encrypted {count} secrets with the newest key.")
