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
        for username, superuser, role in DEMO_USERS:
            what = "superuser" if superuser else f"{role} of team vision"
            self.stdout.write(f"  {username:<10} {what}")
