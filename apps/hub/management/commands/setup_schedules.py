from datetime import timedelta

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import Schedule

from apps.hub import services


class Command(BaseCommand):
    help = (
        "Register the periodic tasks every installed app lists in its schedules.py (SCHEDULES) as "
        "django-q2 Schedules. Idempotent: run it on every start; a changed period or function is updated."
    )

    def handle(self, *args, **options):
        for config in apps.get_app_configs():
            try:
                entries = import_string(f"{config.name}.schedules.SCHEDULES")
            except ImportError:
                continue
            for name, func, seconds in entries:
                self._ensure(name, func, seconds)

    def _ensure(self, name: str, func: str, seconds: int) -> None:
        # django-q2 counts MINUTES in whole minutes; anything shorter than a minute is a minute.
        minutes = max(1, round(seconds / 60))
        defaults = {"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1}
        with transaction.atomic():
            schedule = Schedule.objects.select_for_update().filter(name=name).first()
            created = schedule is None
            if created:
                next_run = timezone.now() + timedelta(seconds=5)
                services.schedule_save(schedule=Schedule(), actor=None, name=name, next_run=next_run, **defaults)
                changed = []
            else:
                changed = [k for k, v in defaults.items() if getattr(schedule, k) != v]
                if changed:
                    services.schedule_save(schedule=schedule, actor=None, **{k: defaults[k] for k in changed})
        verb = "added" if created else ("updated" if changed else "unchanged")
        self.stdout.write(f"{name}: {func} every {minutes} min ({verb})")
