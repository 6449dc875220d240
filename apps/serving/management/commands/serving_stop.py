from django.core.management.base import BaseCommand

from apps.serving.backends import local_backend


class Command(BaseCommand):
    help = "Stop every local model server (./dev down). What should be live stays recorded; ./dev up restarts it."

    def handle(self, *args, **options):
        stopped = local_backend().stop_all()
        self.stdout.write(f"stopped {len(stopped)} model server(s)")
