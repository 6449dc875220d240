from django.core.management.base import BaseCommand, CommandError

from apps.audit.selectors import audit_verify
from apps.audit.services import audit_checkpoint_write


class Command(BaseCommand):
    help = (
        "Walk the audit chain with the audit key and check it against every signed checkpoint; exit non-zero "
        "naming the first bad event. A chain that verifies gets a new signed checkpoint."
    )

    def handle(self, *args, **options):
        result = audit_verify()
        if not result.ok:
            where = f" (first bad event #{result.bad_seq})" if result.bad_seq else ""
            raise CommandError(f"Audit chain BROKEN after {result.count} good events: {result.problem}{where}.")
        try:
            audit_checkpoint_write(verification=result)
        except OSError as exc:
            # The chain verified; only signing its end failed (e.g. run as another user than the hub's).
            self.stderr.write(f"No checkpoint written to {exc.filename}: {exc.strerror}. Run this as the hub's user.")
        self.stdout.write(
            f"Audit chain OK: {result.count} events, head {result.head_hash}, "
            f"{result.checkpoints} signed checkpoints matched"
        )
