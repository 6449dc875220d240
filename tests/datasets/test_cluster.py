"""Datasets against the real local Slurm cluster: the checksum runs there, as the grant's own
account, and must equal what sha256sum computes on the same files by hand."""

import os
import pwd
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from apps.audit.models import AuditEvent
from apps.datasets import remote, services
from apps.datasets.models import DatasetVersion
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.slurm, pytest.mark.django_db]

V = DatasetVersion.Status


@pytest.fixture
def env():
    env = local_cluster_env()
    if env is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    return env


@pytest.fixture(params=["ssh", "rest"])
def grant(request, env, alice):
    cluster = make_local_cluster(request.param, f"local-{request.param}")
    return make_local_grant(cluster, alice, "scientist")


@pytest.fixture
def scratch(env):
    """A fresh folder in scientist's scratch space, owned by scientist, removed afterwards."""
    root = Path(env["AXLE_LOCAL_SCRATCH_ROOT"]) / "scientist" / f"axle-test-datasets-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def give_to_scientist(path: Path) -> None:
    user = pwd.getpwnam("scientist")
    for folder, dirs, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(name, user.pw_uid, user.pw_gid)


def make_dataset(folder: Path) -> Path:
    """A folder of awkward names: spaces, a leading dash, unicode, a hidden file, a newline,
    and a folder name that would run a command if it were ever pasted into a shell line."""
    data = folder / "data set $(touch PWNED)"
    (data / "sub dir" / "deeper").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "-starts-with-dash").write_bytes(b"dash")
    (data / "sub dir" / "b c.bin").write_bytes(os.urandom(300_000))
    (data / "sub dir" / "deeper" / "ünïcode.csv").write_text("x,y\n1,2\n")
    (data / ".hidden").write_text("secret-ish")
    (data / "new\nline").write_text("odd but legal")
    (data / "empty").write_bytes(b"")
    for i in range(10):
        (data / f"part-{i:03d}.dat").write_bytes(os.urandom(1000 * (i + 1)))
    give_to_scientist(folder)
    return data


def by_hand(folder: Path) -> str:
    """The documented one-liner, run locally on the same files."""
    out = subprocess.run(
        "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum -- | sha256sum",
        shell=True,
        cwd=folder,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return out.split()[0]


def files_and_size(folder: Path) -> tuple[int, int]:
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(sizes), sum(sizes)


def test_a_folder_is_checksummed_on_the_cluster_with_progress(grant, scratch, monkeypatch, alice, team):
    data = make_dataset(scratch)
    dataset = services.dataset_create(user=alice, team=team, name="cifar-mini", description="tiny")
    version = services.dataset_version_register(user=alice, dataset=dataset, cluster=grant.cluster, path=str(data))
    assert version.status == V.PENDING and version.number == 1

    # Small chunks, so the dataset is hashed in several calls and progress is seen between them.
    monkeypatch.setattr(remote, "FIRST_CHUNK_FILES", 3)
    monkeypatch.setattr(remote, "MIN_CHUNK_FILES", 3)
    monkeypatch.setattr(remote, "MAX_CHUNK_FILES", 3)
    seen = []
    real = remote.measure

    def watching(grant_, path, *, on_listing, on_progress):
        def progress(files, size):
            on_progress(files, size)
            row = DatasetVersion.objects.get(pk=version.pk)
            seen.append((row.status, row.files_done, row.files_total, row.bytes_done, row.bytes_total))

        return real(grant_, path, on_listing=on_listing, on_progress=progress)

    monkeypatch.setattr(remote, "measure", watching)
    services.dataset_version_checksum(version_id=version.pk)
    version.refresh_from_db()

    count, size = files_and_size(data)
    assert version.status == V.READY, version.error
    assert (version.file_count, version.size_bytes) == (count, size) == (17, size)
    assert version.checksum == by_hand(data)
    assert version.cluster_username == "scientist"
    assert version.manifest_complete and len(version.manifest.splitlines()) == count
    assert "  sub dir/deeper/ünïcode.csv" in version.manifest
    # Progress was visible on the row while checksumming, and reached the total.
    assert len(seen) == 6 and all(s[0] == V.CHECKSUMMING and s[2] == count and s[4] == size for s in seen)
    assert [s[1] for s in seen] == [3, 6, 9, 12, 15, 17]
    assert (version.files_done, version.bytes_done) == (count, size)
    assert not (data / "PWNED").exists() and not Path("PWNED").exists()
    events = AuditEvent.objects.filter(subject_id=str(version.uuid)).order_by("seq")
    actions = list(events.values_list("action", flat=True))
    assert actions == ["dataset_version.registered", "dataset_version.checksumming", "dataset_version.ready"]


def test_a_single_file_is_a_version_too(grant, scratch, alice, team):
    data = make_dataset(scratch)
    dataset = services.dataset_create(user=alice, team=team, name="one-file")
    version = services.dataset_version_register(
        user=alice, dataset=dataset, cluster=grant.cluster, path=str(data / "a.txt")
    )
    services.dataset_version_checksum(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == V.READY, version.error
    line = subprocess.run(["sha256sum", "a.txt"], cwd=data, capture_output=True, check=True).stdout
    assert version.manifest.encode() == line
    assert (version.file_count, version.size_bytes) == (1, 6)


def test_a_missing_path_fails_with_a_clear_message(grant, scratch, alice, team):
    dataset = services.dataset_create(user=alice, team=team, name="ghost")
    missing = f"{scratch}/not-there"
    version = services.dataset_version_register(user=alice, dataset=dataset, cluster=grant.cluster, path=missing)
    services.dataset_version_checksum(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == V.FAILED
    assert version.error == f"{missing} does not exist on {grant.cluster.name} or is not readable by scientist."


def test_a_folder_the_account_cannot_read_fails_the_same_way(grant, env, alice, team):
    # admin's scratch folder is mode 700: scientist may not look inside.
    private = f"{env['AXLE_LOCAL_SCRATCH_ROOT']}/admin"
    dataset = services.dataset_create(user=alice, team=team, name="private")
    version = services.dataset_version_register(user=alice, dataset=dataset, cluster=grant.cluster, path=private)
    services.dataset_version_checksum(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == V.FAILED
    assert version.error == f"{private} does not exist on {grant.cluster.name} or is not readable by scientist."


def test_a_file_inside_that_cannot_be_read_fails_the_version(grant, scratch, alice, team):
    data = make_dataset(scratch)
    os.chmod(data / "a.txt", 0)
    dataset = services.dataset_create(user=alice, team=team, name="partly-private")
    version = services.dataset_version_register(user=alice, dataset=dataset, cluster=grant.cluster, path=str(data))
    services.dataset_version_checksum(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == V.FAILED
    assert "as scientist failed" in version.error and "a.txt" in version.error and "Permission denied" in version.error


def test_verification_tells_an_unchanged_version_from_a_changed_one(grant, scratch, alice, bob, team):
    data = make_dataset(scratch)
    dataset = services.dataset_create(user=alice, team=team, name="verified")
    version = services.dataset_version_register(user=alice, dataset=dataset, cluster=grant.cluster, path=str(data))
    services.dataset_version_checksum(version_id=version.pk)
    version.refresh_from_db()

    result = services.dataset_version_verify(version=version, user=alice)
    assert result and result.checksum == version.checksum

    (data / "a.txt").write_text("tampered\n")
    (data / "z-new.txt").write_text("new")
    give_to_scientist(scratch)
    result = services.dataset_version_verify(version=version, user=alice)
    assert not result
    assert result.differences == ["added: z-new.txt", "changed: a.txt"]
    assert "changed on" in result.message

    shutil.rmtree(data)
    result = services.dataset_version_verify(version=version, user=alice)
    assert not result and "does not exist" in result.message
    verified = AuditEvent.objects.filter(subject_id=str(version.uuid), action="dataset_version.verified")
    assert [e.after["matches"] for e in verified.order_by("seq")] == [True, False, False]


@pytest.mark.slow
def test_a_large_folder_reports_progress_about_every_second(grant, scratch, alice, team, monkeypatch):
    """200 files, 200 MB. Hashing speed decides how many updates there are; what matters is
    that none is far apart from the last, and the last one is the total."""
    data = scratch / "big"
    data.mkdir()
    block = os.urandom(1 << 20)
    for i in range(200):
        (data / f"shard-{i:04d}.bin").write_bytes(block[i:] + block[:i])
    give_to_scientist(scratch)
    dataset = services.dataset_create(user=alice, team=team, name="big")
    version = services.dataset_version_register(user=alice, dataset=dataset, cluster=grant.cluster, path=str(data))
    stamps = []
    real = remote.measure

    def timed(grant_, path, *, on_listing, on_progress):
        stamps.append(("start", time.monotonic(), 0))

        def listing(files, size):
            on_listing(files, size)
            stamps.append(("listed", time.monotonic(), 0))

        def progress(files, size):
            on_progress(files, size)
            stamps.append(("progress", time.monotonic(), size))

        return real(grant_, path, on_listing=listing, on_progress=progress)

    monkeypatch.setattr(remote, "measure", timed)
    services.dataset_version_checksum(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == V.READY, version.error
    assert version.checksum == by_hand(data) and version.size_bytes == 200 << 20
    times = [t for _, t, _ in stamps]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    total = times[-1] - times[0]
    print(
        f"\n{grant.cluster.transport}: 200 files / 200 MiB in {total:.2f}s "
        f"({200 / total:.0f} MiB/s), listing {stamps[1][1] - stamps[0][1]:.3f}s, "
        f"{len(stamps) - 2} progress updates, longest gap {max(gaps):.2f}s"
    )
    assert stamps[-1][2] == 200 << 20
    assert max(gaps) < 3 * remote.CHUNK_SECONDS


@pytest.mark.django_db(transaction=True)
def test_registering_through_the_api_runs_the_checksum_task_as_the_worker_would(env, scratch, api, alice, team):
    # Tasks run inline on commit in the test settings, so the answer already carries the result.
    grant = make_local_grant(make_local_cluster("ssh", "local-ssh"), alice, "scientist")
    data = make_dataset(scratch)
    api.force_authenticate(alice)
    dataset = api.post("/api/v1/datasets/", {"team": "vision", "name": "via-api"}).json()
    response = api.post(f"/api/v1/datasets/{dataset['id']}/versions/", {"cluster": "local-ssh", "path": str(data)})
    assert response.status_code == 201
    body = api.get(f"/api/v1/datasets/{dataset['id']}/versions/1/").json()
    assert body["status"] == "ready", body["error"]
    assert body["checksum"] == by_hand(data) and body["cluster_username"] == grant.cluster_username
    assert body["progress"]["percent"] == 100 and body["progress"]["files_done"] == body["file_count"] == 17
    event = AuditEvent.objects.filter(subject_id=body["id"], action="dataset_version.ready").get()
    assert event.actor == alice  # the task acted for whoever registered it


def test_a_rest_only_grant_fails_the_checksum_saying_what_it_lacks(env, scratch, alice, team):
    from apps.clusters import services as cluster_services

    cluster = make_local_cluster("rest", "local-rest")
    # slurmrestd only: no SSH key on the grant, so the login node's files are out of reach.
    grant = cluster_services.grant_create(
        user=alice, cluster=cluster, cluster_username="scientist", actor=None, allowed_partitions=["debug"]
    )
    assert not grant.ssh_private_key_encrypted
    data = make_dataset(scratch)
    dataset = services.dataset_create(user=alice, team=team, name="rest-only")
    version = services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path=str(data))
    services.dataset_version_checksum(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == V.FAILED
    assert version.error == (
        f"A REST-only grant (scientist on cluster local-rest) cannot look at {data}: slurmrestd has "
        "no file API, so files on the cluster are reached over SSH on its login node. An administrator must add "
        "an SSH key to the grant (and a login host with a confirmed host key to the cluster)."
    )
