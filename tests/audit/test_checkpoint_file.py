import os
import shutil
import subprocess

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from apps.audit.checkpoints import checkpoint_list
from apps.audit.services import audit_record


def _verify():
    call_command("audit_verify", stdout=open(os.devnull, "w"))


@pytest.mark.django_db
def test_the_checkpoint_is_a_scheduled_task():
    call_command("setup_schedules")
    schedule = Schedule.objects.get(name="audit.checkpoint")
    assert schedule.func == "apps.audit.tasks.audit_checkpoint" and schedule.minutes == 5


@pytest.mark.django_db
def test_an_append_only_checkpoint_file_takes_new_checkpoints_but_cannot_be_rewritten(settings):
    """What README's `chattr +a` gives: even the hub's own user can only add lines."""
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("chattr +a needs root and e2fsprogs")
    path = settings.AXLE_AUDIT_CHECKPOINT_FILE
    audit_record(action="thing.created")
    _verify()
    if subprocess.run(["chattr", "+a", str(path)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem or container does not allow chattr +a")
    try:
        audit_record(action="thing.created")
        _verify()
        assert [cp.seq for cp in checkpoint_list()] == [1, 2]
        with pytest.raises(PermissionError):
            path.write_text("")
        with pytest.raises(PermissionError):
            path.unlink()
    finally:
        subprocess.run(["chattr", "-a", str(path)], check=True)
