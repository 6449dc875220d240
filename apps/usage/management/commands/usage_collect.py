from django.core.management.base import BaseCommand

from apps.clusters.models import Cluster
from apps.usage import services


class Command(BaseCommand):
    help = "Read finished jobs from Slurm's accounting now (the periodic task does this every 15 minutes)."

    def add_arguments(self, parser):
        parser.add_argument("--cluster", help="only this cluster (by name)")

    def handle(self, *args, cluster=None, **options):
        clusters = Cluster.objects.filter(is_active=True)
        if cluster:
            clusters = clusters.filter(name=cluster)
            if not clusters.exists():
                self.stderr.write(f"No active cluster named {cluster!r}.")
                raise SystemExit(2)
        failed = False
        for c in clusters:
            result = services.usage_collect(cluster=c)
            self.stdout.write(f"{c.name}: {result.rows} finished job(s) in {result.calls} call(s)")
            for error in result.errors:
                failed = True
                self.stderr.write(f"{c.name}: {error}")
        if failed:
            raise SystemExit(1)
