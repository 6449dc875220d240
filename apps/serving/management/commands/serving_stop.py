from django.conf import settings
from django.core.management.base import BaseCommand

from apps.integrations.local_serving.backend import LocalBackend


class Command(BaseCommand):
    help = "Stop every local model server (./dev down). What should be live stays recorded; ./dev up restarts it."

    def handle(self, *args, **options):
        backend = LocalBackend(
            settings.AXLE_SERVING_DIR, settings.AXLE_MODEL_SERVER_MLFLOW, tracking_uri=settings.AXLE_MLFLOW_TRACKING_URI
        )
        stopped = backend.stop_all()
        self.stdout.write(f"stopped {len(stopped)} model server(s)")
