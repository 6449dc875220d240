from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.integrations.mlflow.auth import login_problem
from apps.integrations.mlflow.client import TrackingClient


class Command(BaseCommand):
    help = (
        "Say whether the MLflow server answers and refuses anonymous requests (its login); exit non-zero with "
        "the reason when not. `./dev status` runs it."
    )

    def handle(self, *args, **options):
        login = settings.AXLE_MLFLOW_USERNAME
        client = TrackingClient(
            settings.AXLE_MLFLOW_TRACKING_URI, auth=(login, settings.AXLE_MLFLOW_PASSWORD) if login else None
        )
        if not client.health():
            raise CommandError(f"MLflow at {client.display_uri} does not answer.")
        problem = login_problem(client)
        if problem:
            raise CommandError(problem)
        how = f"login required, the hub logs in as {login}" if login else "the hub has no login configured"
        self.stdout.write(f"MLflow at {client.display_uri}: up, {how}")
