"""A team's runs go only to an experiment the hub made itself (apps.jobs.experiments).

MLflow's auth app lets any login create experiments and manage what it creates: a job of one
team could take `team-<other>` before that team's first job. The hub records what it makes
and never uses an experiment it merely finds by name."""

from __future__ import annotations

import importlib
import logging
import uuid

import pytest
from django.apps import apps

from apps.audit.models import AuditEvent
from apps.clusters.models import Cluster
from apps.integrations.mlflow import auth
from apps.integrations.mlflow.base import MlflowError, MlflowUnavailable
from apps.integrations.mlflow.client import TrackingClient
from apps.jobs import experiments, tracking
from apps.jobs.experiments import TOKEN_TAG, experiment_ensure
from apps.jobs.models import HubExperiment, Job
from tests.factories import ClusterFactory, TeamFactory, UserFactory
from tests.registry.conftest import make_job


class FakeMlflow:
    """Experiments by name, as MLflow keeps them: a name is taken once, by whoever came first."""

    def __init__(self) -> None:
        self.experiments: dict[str, tuple[str, dict[str, str]]] = {}
        self.creates = 0
        self.on_create = None  # called after storing, before answering: a worker dying, a race
        self.on_lookup = None

    def add(self, name: str, tags: dict[str, str] | None = None) -> str:
        self.made = getattr(self, "made", 0) + 1  # ids are never reused, as MLflow's
        experiment_id = str(self.made)
        self.experiments[name] = (experiment_id, dict(tags or {}))
        return experiment_id

    def create_experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        if name in self.experiments:
            raise MlflowError("already exists", permanent=True, code="RESOURCE_ALREADY_EXISTS", status=400)
        self.creates += 1
        experiment_id = self.add(name, tags)
        if self.on_create:
            hook, self.on_create = self.on_create, None
            hook()
        return experiment_id

    def experiment_by_name(self, name: str) -> tuple[str, dict[str, str]] | None:
        if self.on_lookup:
            hook, self.on_lookup = self.on_lookup, None
            hook()
        return self.experiments.get(name)

    deleted: set[str]
    restored: list[str]

    def experiment_stage(self, experiment_id: str) -> str | None:
        if experiment_id not in {i for i, _ in self.experiments.values()}:
            return None
        return "deleted" if experiment_id in getattr(self, "deleted", set()) else "active"

    def restore_experiment(self, experiment_id: str) -> None:
        self.deleted.discard(experiment_id)
        self.restored = [*getattr(self, "restored", []), experiment_id]

    def delete(self, name: str, *, for_good: bool = False) -> None:
        """An MLflow administrator deletes the experiment: to the bin, or for good."""
        if for_good:
            del self.experiments[name]
        else:
            self.deleted = {*getattr(self, "deleted", set()), self.experiments[name][0]}


@pytest.fixture
def mlflow() -> FakeMlflow:
    return FakeMlflow()


def test_it_makes_a_teams_experiment_once_and_reuses_it(db, mlflow):
    first = experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow)
    assert experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow) == first
    assert mlflow.creates == 1
    assert mlflow.experiments["team-vision"][0] == first
    assert HubExperiment.objects.get(key="team-vision").experiment_id == first


def test_it_does_not_use_an_experiment_someone_else_made_under_the_teams_name(db, mlflow, caplog):
    squatted = mlflow.add("team-vision")
    with caplog.at_level(logging.WARNING):
        ours = experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow)
    assert ours != squatted
    row = HubExperiment.objects.get(key="team-vision")
    assert row.mlflow_name.startswith("team-vision (axle ") and mlflow.experiments[row.mlflow_name][0] == ours
    event = AuditEvent.objects.get(action="mlflow.experiment_name_taken")
    assert event.subject_id == squatted and event.after["hub_mlflow_name"] == row.mlflow_name
    assert "not made by the hub" in caplog.text
    assert experiments.token(row.mlflow_name, "team-vision") not in caplog.text + str(event.after)
    # From now on the team's experiment is the hub's, without asking MLflow.
    assert experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow) == ours and mlflow.creates == 1


def test_it_does_not_take_a_guessed_or_borrowed_tag_for_its_own(db, mlflow):
    """Whoever makes an experiment sets its tags: an empty one, a guess, or the tag a job of
    team A reads on its own team's experiment, copied onto `team-B`."""
    experiment_ensure(key="team-a", name="team-a", tracking=mlflow)
    borrowed = mlflow.experiments["team-a"][1][TOKEN_TAG]
    for name, tag in [("team-b", borrowed), ("team-c", ""), ("user-alice", "guess")]:
        squatted = mlflow.add(name, {TOKEN_TAG: tag})
        assert experiment_ensure(key=name, name=name, tracking=mlflow) != squatted
    assert AuditEvent.objects.filter(action="mlflow.experiment_name_taken").count() == 3


def test_it_adopts_its_experiment_made_by_a_worker_that_died_before_recording_it(db, mlflow):
    def dies():
        raise MlflowUnavailable("the worker died before recording the id")

    mlflow.on_create = dies
    with pytest.raises(MlflowUnavailable):
        experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow)
    orphan = mlflow.experiments["team-vision"][0]
    assert not HubExperiment.objects.filter(key="team-vision").exists()
    assert experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow) == orphan
    assert not AuditEvent.objects.filter(action="mlflow.experiment_name_taken").exists()


def test_a_database_restored_from_a_backup_finds_the_experiments_made_since(db, mlflow):
    mlflow.add("team-vision")
    ours = experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow)
    HubExperiment.objects.all().delete()  # the backup predates them
    assert experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow) == ours and mlflow.creates == 1


def test_two_workers_racing_for_a_new_name_share_one_experiment(db, mlflow):
    """The second worker's create finds the name taken (the first has not recorded its id
    yet): the tag says it is the hub's."""
    second: list[str] = []
    mlflow.on_create = lambda: second.append(experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow))
    first = experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow)
    assert second == [first] and mlflow.creates == 1
    assert HubExperiment.objects.get(key="team-vision").experiment_id == first
    assert not AuditEvent.objects.filter(action="mlflow.experiment_name_taken").exists()


def test_two_workers_finding_the_name_taken_make_one_experiment_and_one_audit_event(db, mlflow):
    mlflow.add("team-vision")
    second: list[str] = []
    # The second worker runs while the first is looking at the squatted experiment.
    mlflow.on_lookup = lambda: second.append(experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow))
    first = experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow)
    assert second == [first] and mlflow.creates == 1
    assert AuditEvent.objects.filter(action="mlflow.experiment_name_taken").count() == 1


def test_an_experiment_recorded_before_the_upgrade_is_used_as_it_is(db, mlflow):
    """Migration 0009 records the ids the hub's jobs already hold; those experiments carry no tag."""
    mlflow.experiments["team-vision"] = ("42", {})
    HubExperiment.objects.create(key="team-vision", name="team-vision", mlflow_name="team-vision", experiment_id="42")
    assert experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow) == "42" and mlflow.creates == 0


def test_the_migration_records_the_experiments_the_hubs_jobs_already_use(db, mlflow):
    alice, team = UserFactory(username="alice"), TeamFactory(name="vision")
    make_job(alice, team=team, mlflow_experiment_id="7")
    make_job(alice, team=team, mlflow_experiment_id="9")  # the latest wins
    make_job(alice, mlflow_experiment_id="8")
    make_job(alice, team=TeamFactory(name="never-ran"))
    mlflow.experiments["team-vision"] = ("9", {})
    importlib.import_module("apps.jobs.migrations.0009_record_hub_experiments").record(apps, None)
    recorded = dict(HubExperiment.objects.values_list("name", "experiment_id"))
    assert recorded == {"team-vision": "9", "user-alice": "8"}
    # 0011 keys them by whose jobs log there; a row no job used, by the name's team if any.
    HubExperiment.objects.create(name="team-disbanded", mlflow_name="team-disbanded", experiment_id="3")
    unused = TeamFactory(name="unused")
    HubExperiment.objects.create(name="team-unused", mlflow_name="team-unused", experiment_id="4")
    # A team renamed before the upgrade (`ml` -> `ml-archive`, its jobs in experiment 5) and a
    # new `ml`: the row `team-ml` is the renamed team's, not the new one's.
    archive, new_ml = TeamFactory(name="ml-archive"), TeamFactory(name="ml")
    make_job(alice, team=archive, mlflow_experiment_id="5")
    HubExperiment.objects.create(name="team-ml", mlflow_name="team-ml", experiment_id="5")
    # Both teams logged to experiment 6 (the old bug): neither gets it.
    shared = TeamFactory(name="shared")
    make_job(alice, team=shared, mlflow_experiment_id="6")
    make_job(alice, team=new_ml, mlflow_experiment_id="6")
    HubExperiment.objects.create(name="team-shared", mlflow_name="team-shared", experiment_id="6")
    importlib.import_module("apps.jobs.migrations.0011_hubexperiment_key").fill(apps, None)
    keys = dict(HubExperiment.objects.values_list("name", "key"))
    assert keys == {
        "team-vision": f"team:{team.pk}",
        "user-alice": f"user:{alice.pk}",
        "team-disbanded": None,
        "team-unused": f"team:{unused.pk}",
        "team-ml": f"team:{archive.pk}",
        "team-shared": None,
    }
    key = experiments.owner_key(team_id=team.pk, user_id=alice.pk)
    assert experiment_ensure(key=key, name="team-vision", tracking=mlflow) == "9" and mlflow.creates == 0


def test_the_migration_reversed_leaves_one_row_per_name_the_owners_keeping_it(db):
    # 0010 had one row per name; since 0011 a new team given a renamed team's old name has a
    # row of that name too. Reversed, the keyed (newest) row keeps the name, the others are
    # renamed, so 0010's unique name can be put back (before: the reverse failed on them).
    old = HubExperiment.objects.create(name="team-ml", mlflow_name="team-ml", experiment_id="5", key=None)
    newer = HubExperiment.objects.create(name="team-ml", mlflow_name="team-ml-2", experiment_id="6", key="team:2")
    keyless = HubExperiment.objects.create(name="team-ml", mlflow_name="team-ml-3", experiment_id="7", key=None)
    alone = HubExperiment.objects.create(name="user-alice", mlflow_name="user-alice", experiment_id="8", key="user:1")
    importlib.import_module("apps.jobs.migrations.0011_hubexperiment_key").unfill(apps, None)
    names = dict(HubExperiment.objects.values_list("pk", "name"))
    assert names == {
        old.pk: f"team-ml~{old.pk}",
        newer.pk: "team-ml",
        keyless.pk: f"team-ml~{keyless.pk}",
        alone.pk: "user-alice",
    }
    assert set(HubExperiment.objects.values_list("experiment_id", flat=True)) == {"5", "6", "7", "8"}


def test_a_renamed_team_keeps_its_experiment_and_a_new_team_of_the_old_name_gets_its_own(db, mlflow):
    """Found by the team's id: were it found by name, the new `vision` would log its runs next
    to the renamed team's, with its job logins able to edit them."""
    old, new = TeamFactory(name="vision"), None
    ours = experiment_ensure(key=experiments.owner_key(team_id=old.pk, user_id=1), name="team-vision", tracking=mlflow)
    old.name = "vision-archive"
    old.save()
    assert (
        experiment_ensure(
            key=experiments.owner_key(team_id=old.pk, user_id=1), name="team-vision-archive", tracking=mlflow
        )
        == ours
    )
    new = TeamFactory(name="vision")
    theirs = experiment_ensure(
        key=experiments.owner_key(team_id=new.pk, user_id=1), name="team-vision", tracking=mlflow
    )
    assert theirs != ours
    # The MLflow name `team-vision` is the renamed team's experiment (the hub's, but keyed to
    # the other team): the new team gets the hub's alternate name, never that experiment.
    row = HubExperiment.objects.get(key=f"team:{new.pk}")
    assert row.mlflow_name.startswith("team-vision (axle ") and mlflow.experiments[row.mlflow_name][0] == theirs


def test_its_experiment_deleted_in_mlflow_is_restored_not_replaced(db, mlflow):
    """An MLflow administrator put the team's experiment in the bin: the team's next job
    would make its run there and fail on the node. The hub restores it (its runs are what the
    team's lineage points to) and says so."""
    ours = experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow)
    mlflow.delete("team-vision")
    assert experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow) == ours
    assert mlflow.experiment_stage(ours) == "active" and mlflow.restored == [ours] and mlflow.creates == 1
    event = AuditEvent.objects.get(action="mlflow.experiment_restored")
    assert event.subject_id == ours and event.after["name"] == "team-vision"


def test_its_experiment_deleted_for_good_is_replaced_and_recorded_anew(db, mlflow):
    old = experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow)
    mlflow.delete("team-vision", for_good=True)
    new = experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow)
    assert new != old and mlflow.experiments["team-vision"][0] == new and mlflow.creates == 2
    assert HubExperiment.objects.get(key="team-vision").experiment_id == new
    assert AuditEvent.objects.get(action="mlflow.experiment_gone").subject_id == old
    assert experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow) == new and mlflow.creates == 2


def test_its_unrecorded_experiment_found_in_the_bin_is_restored(db, mlflow):
    """A name stays taken while its experiment is in MLflow's bin: the hub's own (by its tag),
    made by a worker that died before recording it, is restored rather than taken for another's."""
    mlflow.on_create = lambda: (_ for _ in ()).throw(MlflowUnavailable("died"))
    with pytest.raises(MlflowUnavailable):
        experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow)
    orphan = mlflow.experiments["team-vision"][0]
    mlflow.delete("team-vision")
    assert experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow) == orphan
    assert mlflow.experiment_stage(orphan) == "active"
    assert AuditEvent.objects.filter(action="mlflow.experiment_restored", subject_id=orphan).exists()


def test_an_experiment_tagged_before_tokens_named_their_owner_is_found_unless_recorded(db, mlflow):
    """Experiments made before migration 0011 carry the older token (the name's alone): one no
    record holds (a database restored from an older backup) is the hub's still; one a record
    holds (a renamed team's, whose old name a new team has now) is not the new team's."""
    older = mlflow.add("team-vision", {TOKEN_TAG: experiments._legacy_token("team-vision")})
    assert experiment_ensure(key="team:1", name="team-vision", tracking=mlflow) == older
    assert mlflow.creates == 0 and not AuditEvent.objects.filter(action="mlflow.experiment_name_taken").exists()

    renamed = mlflow.add("team-ml", {TOKEN_TAG: experiments._legacy_token("team-ml")})
    HubExperiment.objects.create(key="team:2", name="team-ml", mlflow_name="team-ml", experiment_id=renamed)
    theirs = experiment_ensure(key="team:3", name="team-ml", tracking=mlflow)
    assert theirs != renamed and HubExperiment.objects.get(key="team:3").mlflow_name.startswith("team-ml (axle ")


@pytest.mark.mlflow
def test_a_teams_experiment_deleted_in_mlflow_is_restored_for_its_next_job(db):
    hub = tracking.client()
    team = TeamFactory(name=f"binned-{uuid.uuid4().hex[:8]}")
    experiment_id = experiment_ensure(key=f"team-{team.name}", name=f"team-{team.name}", tracking=hub)
    hub._post("experiments/delete", "deleting an experiment", {"experiment_id": experiment_id})
    assert hub.experiment_stage(experiment_id) == "deleted"

    assert experiment_ensure(key=f"team-{team.name}", name=f"team-{team.name}", tracking=hub) == experiment_id
    assert hub.experiment_stage(experiment_id) == "active"
    assert hub.create_run(experiment_id, "after-restore")  # runs go there again
    assert AuditEvent.objects.filter(action="mlflow.experiment_restored", subject_id=experiment_id).exists()


def test_it_gives_up_when_every_name_it_tries_is_taken(db, mlflow, monkeypatch):
    mlflow.add("team-vision")
    mlflow.add("team-vision (axle same)")
    monkeypatch.setattr(experiments, "candidate_name", lambda name, n, key: name if n == 0 else f"{name} (axle same)")
    with pytest.raises(MlflowUnavailable, match="every name it tried was taken"):
        experiment_ensure(key="team-vision", name="team-vision", tracking=mlflow)


@pytest.mark.mlflow
def test_a_teams_next_job_does_not_land_in_an_experiment_another_login_took_first(db):
    """Against the real server: a login that is not the hub's (as a job of another team has)
    creates `team-<x>` before team x's first job; that job's run goes elsewhere, out of the
    other login's reach."""
    hub = tracking.client()
    if not hub.health():
        pytest.fail(f"MLflow at {hub.display_uri} does not answer: start it with compose/local/stack.sh up")
    tag = uuid.uuid4().hex[:8]
    outsider = auth.user_with_permissions(hub, f"axle-job-test-squat-{tag}", [])
    assert outsider is not None, f"MLflow at {hub.display_uri} has no login: stack.sh up starts it with one"
    try:
        as_outsider = TrackingClient(hub.base_url, auth=(outsider.username, outsider.password), timeout=30)
        team = TeamFactory(name=f"squatted-{tag}")
        squatted = as_outsider.create_experiment(f"team-{team.name}", {TOKEN_TAG: "a guess"})
        job = Job(
            uuid=uuid.uuid4(),
            name="digits",
            owner=UserFactory(),
            team=team,
            cluster=ClusterFactory(tracking_mode=Cluster.TrackingMode.SERVER),
            workdir="/scratch/alice/axle-jobs/digits",
        )

        experiment_id, run_id = tracking.open_run(job)

        assert experiment_id != squatted
        assert hub.get_run(run_id).experiment_id == experiment_id
        assert hub.runs_tagged(squatted, "axle.job_id", str(job.uuid)) == []
        with pytest.raises(MlflowError) as refused:
            as_outsider.get_run(run_id)
        assert refused.value.status == 403
        row = HubExperiment.objects.get(key=f"team:{team.pk}")
        assert row.experiment_id == experiment_id and row.mlflow_name != f"team-{team.name}"
        assert AuditEvent.objects.filter(action="mlflow.experiment_name_taken", subject_id=squatted).exists()
        # The team's next job goes to the same experiment.
        job2 = Job(uuid=uuid.uuid4(), name="digits-2", owner=job.owner, team=team, cluster=job.cluster)
        assert tracking.open_run(job2)[0] == experiment_id
    finally:
        auth.user_delete(hub, outsider.username)
