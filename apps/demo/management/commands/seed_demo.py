import os

from django.core.management.base import BaseCommand
from django.db import transaction

from apps.accounts import services
from apps.accounts.models import Membership, Team, User

DEMO_USERS = [
    # username, superuser, team role in "vision"
    ("scientist", False, Membership.Role.MEMBER),
    ("approver", False, Membership.Role.APPROVER),
    ("admin", True, None),
]


class Command(BaseCommand):
    help = "Create the demo accounts and team (idempotent). Password from AXLE_DEMO_PASSWORD, default axle-demo."

    def handle(self, *args, **options):
        password = os.environ.get("AXLE_DEMO_PASSWORD") or "axle-demo"
        with transaction.atomic():
            team = Team.objects.filter(name="vision").first() or services.team_create(
                name="vision", description="Demo team: computer vision research"
            )
            for username, superuser, role in DEMO_USERS:
                user = User.objects.filter(username=username).first()
                if user is None:
                    user = services.user_create(
                        username=username, password=password, email=f"{username}@example.org", is_superuser=superuser
                    )
                if role:
                    services.membership_set(user=user, team=team, role=role)
        self._clusters()
        for username, superuser, role in DEMO_USERS:
            what = "superuser" if superuser else f"{role} of team vision"
            self.stdout.write(f"  {username:<10} {what}")

    def _clusters(self):
        """Register the local cluster once per transport and grant scientist both."""
        from pathlib import Path

        from django.conf import settings

        from apps.clusters.local import grant_local, read_cluster_env, register_local_cluster
        from apps.clusters.tasks import cluster_refresh_health

        env = read_cluster_env(Path(settings.AXLE_STACK_DIR) / "cluster.env")
        if env is None:
            self.stdout.write("  (no local cluster: compose/local/stack.sh has not run, so no demo clusters)")
            return
        scientist = User.objects.get(username="scientist")
        admin = User.objects.get(username="admin")
        limits = {
            "allowed_partitions": ["debug"],
            "allowed_accounts": ["vision"],
            "max_nodes": 1,
            "max_cpus": 2,
            # The local cluster has no GPUs: a GPU request is refused before Slurm, with the numbers.
            "max_gpus": 0,
            "max_mem_mb": 4096,
            "max_time_minutes": 60,
            "max_active_jobs": 20,
            "max_array_size": 100,
        }
        for transport in ("ssh", "rest"):
            cluster = register_local_cluster(env=env, transport=transport, name=f"local-{transport}", actor=admin)
            grant_local(env=env, cluster=cluster, user=scientist, cluster_username="scientist", actor=admin, **limits)
            # Jobs are checked against the cluster's own defaults: read them now, as the periodic
            # health check would a minute later, so the demo's first job is not refused.
            cluster = cluster_refresh_health(cluster.pk)
            if cluster is not None and not cluster.reachable:
                self.stdout.write(f"  warning: {cluster.name} did not answer: {cluster.last_error}")
        self.stdout.write("  clusters local-ssh and local-rest registered; scientist granted both (partition debug)")
