from django.apps import AppConfig


def _start_tracking(**kwargs):
    # As the jobs' loop (apps.jobs.apps): a worker that (re)starts starts the sweeps' loop at
    # once; its lease makes the extra starts no-ops while one runs.
    from django_q.conf import Conf
    from django_q.tasks import async_task

    if Conf.SYNC:
        return
    try:
        async_task("apps.sweeps.tasks.sweeps_track")
    except Exception:  # the broker is down: the schedule starts it later
        import logging

        logging.getLogger(__name__).exception("could not start the sweeps' tracking loop")


class SweepsConfig(AppConfig):
    name = "apps.sweeps"
    label = "sweeps"

    def ready(self):
        from django_q.signals import post_spawn

        post_spawn.connect(_start_tracking, dispatch_uid="apps.sweeps.start_tracking")
