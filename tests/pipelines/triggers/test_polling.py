"""Polling a repository that cannot send webhooks: `git ls-remote` run on the local cluster as
the grant's own account over the real SSH transport, one call per repository."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.pipelines import services as pipeline_services
from apps.pipelines.models import PipelineRun
from apps.pipelines.triggers import gitremote, services
from apps.pipelines.triggers.models import TriggerSettings


def test_the_command_is_argv_with_the_url_after_a_double_dash():
    argv = gitremote.ls_remote_argv("--upload-pack=touch /tmp/x", ["main", "dev"])
    assert argv[:6] == ["git", "-c", "protocol.ext.allow=never", "ls-remote", "--heads", "--"]
    assert argv[6:] == ["--upload-pack=touch /tmp/x", "refs/heads/main", "refs/heads/dev"]


def test_heads_are_read_by_their_exact_name():
    out = f"{'1' * 40}\trefs/heads/main\n{'2' * 40}\trefs/heads/feature/main\n{'3' * 40}\trefs/heads/dev\nnot a line\n"
    assert gitremote.parse_heads(out, ["main"]) == {"main": "1" * 40}
    assert gitremote.parse_heads(out, ["main", "dev", "gone"]) == {"main": "1" * 40, "dev": "3" * 40}


@pytest.mark.slurm
@pytest.mark.django_db
def test_polling_sees_a_new_commit_once(alice, cluster_pipeline, cluster_repo):
    pipeline = cluster_pipeline
    services.polling_set(user=alice, pipeline=pipeline, enabled=True, interval_minutes=2)
    assert AuditEvent.objects.filter(action="pipeline.polling_changed", actor=alice).exists()
    t0 = timezone.now()

    # The first poll notes where the branch is and starts nothing: that commit is not new.
    assert services.polls_due(now=t0) == 1
    row = TriggerSettings.objects.get(pipeline=pipeline)
    assert row.last_seen_commit == cluster_repo.first_commit and not row.last_poll_error
    assert not PipelineRun.objects.exists()

    # Not due again before its interval.
    assert services.polls_due(now=t0 + timedelta(minutes=1)) == 0

    new = cluster_repo.commit({"notes.txt": "more data\n"}, "new data")
    assert services.polls_due(now=t0 + timedelta(minutes=2)) == 1
    run = PipelineRun.objects.get(pipeline=pipeline)
    assert (run.trigger, run.commit, run.status) == (PipelineRun.Trigger.POLL, new, PipelineRun.Status.RUNNING)
    assert run.trigger_detail["previous"] == cluster_repo.first_commit

    # Later polls see the same head: still exactly one run for that commit.
    assert services.polls_due(now=t0 + timedelta(minutes=4)) == 1
    assert services.polls_due(now=t0 + timedelta(minutes=6)) == 1
    assert PipelineRun.objects.filter(pipeline=pipeline).count() == 1
    assert TriggerSettings.objects.get(pipeline=pipeline).last_seen_commit == new


@pytest.mark.slurm
@pytest.mark.django_db
def test_pipelines_sharing_a_repository_cost_one_ls_remote(alice, team, cluster_grant, cluster_pipeline, cluster_repo):
    dev_head = cluster_repo.commit({"dev.txt": "dev\n"}, "dev work", branch="dev")
    other = pipeline_services.pipeline_create(
        user=alice, team=team, name="tiny-dev", grant=cluster_grant, repo_url=cluster_repo.path, branch="dev"
    )
    for p in (cluster_pipeline, other):
        services.polling_set(user=alice, pipeline=p, enabled=True, interval_minutes=1)
    t0 = timezone.now()
    assert services.polls_due(now=t0) == 1  # one call answered both branches
    seen = dict(TriggerSettings.objects.values_list("pipeline__branch", "last_seen_commit"))
    assert seen == {"main": cluster_repo.first_commit, "dev": dev_head}

    main_new = cluster_repo.commit({"m.txt": "m\n"}, "main moves")
    assert services.polls_due(now=t0 + timedelta(minutes=1)) == 1
    assert list(PipelineRun.objects.values_list("pipeline__branch", "commit")) == [("main", main_new)]


@pytest.mark.slurm
@pytest.mark.django_db
def test_a_repository_the_account_cannot_read_is_reported_not_raised(alice, team, cluster_grant):
    pipeline = pipeline_services.pipeline_create(
        user=alice, team=team, name="nowhere", grant=cluster_grant, repo_url="/nonexistent/repo.git"
    )
    services.polling_set(user=alice, pipeline=pipeline, enabled=True)
    assert services.polls_due(now=timezone.now()) == 1
    row = TriggerSettings.objects.get(pipeline=pipeline)
    assert "git ls-remote /nonexistent/repo.git failed as scientist" in row.last_poll_error
    assert not PipelineRun.objects.exists()
