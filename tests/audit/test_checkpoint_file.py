import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from apps.audit.checkpoints import checkpoint_list
from apps.audit.services import audit_record
from tests.ci_skips import skip_not_applicable

ROOT = Path(__file__).resolve().parents[2]
# Filesystems whose Linux drivers implement the append-only attribute: on these a refused
# `chattr +a` is a defect (and fails CI); on others (tmpfs, overlayfs in containers) the test
# cannot apply, and `./dev up` only warns.
APPEND_ONLY_FILESYSTEMS = {"ext2/ext3", "xfs", "btrfs"}


def _verify():
    call_command("audit_verify", stdout=open(os.devnull, "w"))


def _chattr_or_skip(*args: str) -> None:
    """chattr, or a skip that says why; CI fails the skip where the filesystem supports it."""
    path = args[-1]
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("chattr +a needs root and e2fsprogs")
    done = subprocess.run(["chattr", *args], capture_output=True, text=True)
    if done.returncode == 0:
        return
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True).stdout.strip()
    if fs in APPEND_ONLY_FILESYSTEMS:
        pytest.skip(f"chattr +a refused on {fs}, which supports it: {done.stderr.strip()}")
    skip_not_applicable(f"{fs} does not support chattr +a ({done.stderr.strip()})")


@pytest.mark.django_db
def test_the_checkpoint_is_a_scheduled_task():
    call_command("setup_schedules")
    schedule = Schedule.objects.get(name="audit.checkpoint")
    assert schedule.func == "apps.audit.tasks.audit_checkpoint" and schedule.minutes == 5


@pytest.mark.django_db
def test_an_append_only_checkpoint_file_takes_new_checkpoints_but_cannot_be_rewritten(settings):
    """What `./dev up` sets with `chattr +a`: even the hub's own user can only add lines."""
    path = settings.AXLE_AUDIT_CHECKPOINT_FILE
    audit_record(action="thing.created")
    _verify()
    _chattr_or_skip("+a", str(path))
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


def test_dev_up_makes_the_checkpoint_file_the_hubs_and_append_only(tmp_path):
    """The hub-layout step of `./dev up` (compose/local/hub.sh), on a folder of the test's own."""
    if os.geteuid() != 0:
        pytest.skip("the hub's layout is made as root")
    path = tmp_path / "hub" / "audit" / "checkpoints.log"
    script = (
        f'source "{ROOT}/compose/local/lib.sh"; source "{ROOT}/compose/local/hub.sh"; hub_audit_checkpoint_ensure "$1"'
    )
    done = subprocess.run(["bash", "-c", script, "hub", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    try:
        st = path.stat()
        assert (st.st_mode & 0o777, path.owner(), path.parent.stat().st_mode & 0o777) == (0o600, "axle", 0o700)
        attrs = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True).stdout.split()[0]
        if "a" not in attrs:
            assert "WARNING: could not make" in done.stderr  # never silently unprotected
            _chattr_or_skip("+a", str(path))
        assert "a" in attrs
        again = subprocess.run(["bash", "-c", script, "hub", str(path)], capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and again.stderr == ""
    finally:
        subprocess.run(["chattr", "-a", str(path)], capture_output=True)
