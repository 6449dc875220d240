from django.core.management.base import BaseCommand, CommandError

from apps.audit.selectors import audit_verify


class Command(BaseCommand):
    help = "Walk the audit hash chain; exit non-zero naming the first bad event."

    def handle(self, *args, **options):
        result = audit_verify()
        if not result.ok:
            raise CommandError(
                f"Audit chain BROKEN after {result.count} good events: {result.problem} "
                f"(first bad event #{result.bad_seq})."
            )
        self.stdout.write(f"Audit chain OK: {result.count} events, head {result.head_hash}")
