"""Every change an administrator can make in the Django admin leaves an audit event carrying the
request's id (NetBox's change-logging test, applied to the admin).

The sweep reads the admin site itself: for every registered model, whatever it offers to a
superuser (add, change, delete, each bulk action) is performed once, successfully, through
the real admin pages, and the test fails when that request wrote no AuditEvent. A new model
or action without a case below fails here until someone decides how it is audited."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import RequestFactory
from django.utils import timezone
from django_q.models import Failure, OrmQ, Schedule, Success
from django_q.signing import SignedPackage

from apps.accounts import services as account_services
from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.clusters.models import ClusterGrant
from apps.core import crypto
from apps.pipelines.models import Pipeline
from apps.pipelines.triggers.models import PipelineSchedule, TriggerSettings
from apps.serving.models import Environment
from tests.audit.forms import form_data
from tests.factories import ClusterFactory, ClusterGrantFactory, TeamFactory, UserFactory


@dataclass
class Case:
    make: Callable[[], object] | None = None  # an existing row to change, delete or act on
    add: Callable[[], dict] | None = None  # fields to fill in on the add form
    change: Callable[[object], dict] | None = None  # fields to change on the change form
    actions: dict[str, Callable[[], object]] = field(default_factory=dict)  # action -> row it acts on


def _task(success: bool):
    now = timezone.now()
    model = Success if success else Failure
    return model.objects.create(
        id=f"{'s' if success else 'f'}{now.timestamp():.0f}".ljust(32, "0"),
        name="cheerful-robin",
        func="math.floor",
        args=(1.5,),
        kwargs={},
        started=now,
        stopped=now,
        success=success,
        result=1 if success else "boom",
    )


def _queued():
    package = SignedPackage.dumps({"id": "q1", "name": "waiting-task", "func": "math.floor", "args": (1.5,)})
    return OrmQ.objects.create(key="default", payload=package, lock=timezone.now())


def _schedule():
    return Schedule.objects.create(name="nightly", func="math.floor", args="1.5", schedule_type=Schedule.DAILY)


def _failed_logins():
    attempt = AccessAttempt.objects.create(
        username="mallory", ip_address="127.0.0.9", user_agent="curl", failures_since_start=3
    )
    # attempt_time is set on insert; age it past the cool-off so it counts as expired.
    AccessAttempt.objects.filter(pk=attempt.pk).update(attempt_time=timezone.now() - timedelta(days=2))
    return attempt


def _requested_grant():
    return ClusterGrantFactory(status=ClusterGrant.Status.REQUESTED, cluster_username="alice01")


def _pipeline(name: str = "nightly") -> Pipeline:
    grant = ClusterGrantFactory(cluster_username="alice01")
    return Pipeline.objects.create(
        team=TeamFactory(),
        owner=grant.user,
        grant=grant,
        cluster=grant.cluster,
        name=name,
        repo_url="https://git.example.org/ml/nightly.git",
    )


def _triggers(**fields) -> TriggerSettings:
    pipeline = _pipeline()
    return TriggerSettings.objects.create(pipeline=pipeline, webhook_set_by=pipeline.owner, **fields)


def _pipeline_schedule(enabled: bool = True) -> PipelineSchedule:
    pipeline = _pipeline()
    return PipelineSchedule.objects.create(
        pipeline=pipeline, cron="0 3 * * *", timezone="UTC", enabled=enabled, created_by=pipeline.owner
    )


CASES: dict[str, Case] = {
    "pipeline_triggers.triggersettings": Case(
        actions={
            "turn_off_webhook": lambda: _triggers(webhook_secret_encrypted=crypto.encrypt("s3cret-for-the-forge")),
            "turn_off_polling": lambda: _triggers(polling_enabled=True, poll_next_at=timezone.now()),
        }
    ),
    "pipeline_triggers.pipelineschedule": Case(
        make=_pipeline_schedule,
        change=lambda s: {"enabled": None},  # unticked: paused
        actions={
            "pause_selected": _pipeline_schedule,
            "resume_selected": lambda: _pipeline_schedule(enabled=False),
        },
    ),
    "axes.accessattempt": Case(
        make=_failed_logins,
        actions={"delete_selected": _failed_logins, "cleanup_expired_attempts": _failed_logins},
    ),
    "auth.group": Case(
        make=lambda: Group.objects.create(name="operators"),
        add=lambda: {"name": "auditors"},
        change=lambda g: {"name": "operators-2"},
        actions={"delete_selected": lambda: Group.objects.create(name="gone")},
    ),
    "django_q.schedule": Case(
        make=_schedule,
        add=lambda: {"name": "hourly", "func": "math.floor", "schedule_type": Schedule.HOURLY},
        change=lambda s: {"name": "nightly-renamed"},
        actions={"delete_selected": _schedule},
    ),
    "django_q.success": Case(
        make=lambda: _task(True),
        actions={"delete_selected": lambda: _task(True), "resubmit_selected": lambda: _task(True)},
    ),
    "django_q.failure": Case(
        make=lambda: _task(False),
        actions={"delete_selected": lambda: _task(False), "resubmit_selected": lambda: _task(False)},
    ),
    "django_q.ormq": Case(make=_queued, actions={"delete_selected": _queued}),
    "accounts.user": Case(
        make=lambda: UserFactory(username="dora"),
        add=lambda: {"username": "erin", "password1": "a long new passphrase", "password2": "a long new passphrase"},
        change=lambda u: {"first_name": "Dora", "email": "dora@example.net"},
    ),
    "accounts.team": Case(
        make=lambda: TeamFactory(name="audio"),
        add=lambda: {"name": "speech"},
        change=lambda t: {"name": "audio-ml", "description": "Sound"},
    ),
    "accounts.apitoken": Case(
        actions={
            "revoke_selected": lambda: account_services.token_create(user=UserFactory(username="dora"), name="ci")[0]
        }
    ),
    "clusters.cluster": Case(
        make=lambda: ClusterFactory(name="hpc1"),
        add=lambda: {"name": "hpc2", "login_host": "login.hpc2", "job_root": "/scratch/{username}/axle-jobs"},
        change=lambda c: {"description": "The renamed cluster"},
    ),
    "clusters.clustergrant": Case(
        make=_requested_grant,
        add=lambda: {
            "user": str(UserFactory(username="dora").pk),
            "cluster": str(ClusterFactory(name="hpc1").pk),
            "cluster_username": "dora01",
            "allowed_partitions": "debug",
        },
        change=lambda g: {"max_cpus": "8"},
        actions={
            "approve_selected": _requested_grant,
            "decline_selected": _requested_grant,
            "revoke_selected": lambda: ClusterGrantFactory(),
            "resume_selected": lambda: ClusterGrantFactory(status=ClusterGrant.Status.SUSPENDED),
            "generate_ssh_keys": lambda: ClusterGrantFactory(),
        },
    ),
    "serving.environment": Case(
        make=lambda: Environment.objects.create(name="production", required_approvals=1, approver_role="approver"),
        add=lambda: {"name": "staging", "required_approvals": "0"},
        change=lambda e: {"required_approvals": "2"},
    ),
}

# Offered by the admin but not performed here, each with the reason and where it is covered.
EXEMPT = {
    (
        "clusters.cluster",
        "action:check_health_now",
    ): "queues a read of the cluster (tests/clusters/test_health.py); it changes no configuration, "
    "only the observed health that the periodic check also writes",
    (
        "serving.deployment",
        "action:approve_selected",
    ): "needs a model version whose artifact MLflow re-verifies; tests/serving/test_four_eyes.py "
    "approves through this action and checks deployment.approved",
    ("serving.deployment", "action:reject_selected"): "as approve_selected, in tests/serving/test_four_eyes.py",
}


def _superuser_request():
    request = RequestFactory().get("/admin/")
    request.user = User(username="sweep", is_active=True, is_staff=True, is_superuser=True)
    return request


def offered_operations() -> list[tuple[str, str]]:
    """(model label, operation) for everything the admin lets a superuser change."""
    request = _superuser_request()
    ops = []
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        if model_admin.has_add_permission(request):
            ops.append((label, "add"))
        if model_admin.has_change_permission(request):
            ops.append((label, "change"))
        if model_admin.has_delete_permission(request):
            ops.append((label, "delete"))
        ops.extend((label, f"action:{name}") for name in model_admin.get_actions(request))
    return sorted(ops)


OPERATIONS = offered_operations()


def _url(label: str, view: str, *args) -> str:
    from django.urls import reverse

    app, model = label.split(".")
    return reverse(f"admin:{app}_{model}_{view}", args=args)


def _events(response) -> list[str]:
    request_id = response["X-Request-ID"]
    return list(AuditEvent.objects.filter(request_id=request_id).values_list("action", flat=True))


def _form_id(label: str) -> str:
    return f"{label.split('.')[1]}_form"


def test_the_sweep_sees_what_the_admin_offers():
    assert ("accounts.user", "change") in OPERATIONS
    assert ("auth.group", "add") in OPERATIONS
    assert ("django_q.schedule", "change") in OPERATIONS
    assert ("accounts.user", "delete") not in OPERATIONS  # deactivated, never deleted


def test_every_case_and_exemption_is_still_offered():
    offered = set(OPERATIONS)
    for label, case in CASES.items():
        named = [("add", case.add), ("change", case.change)]
        for op, given in named:
            if given is not None:
                assert (label, op) in offered, f"{label} no longer offers {op}: drop the case"
        for action in case.actions:
            assert (label, f"action:{action}") in offered, f"{label} no longer has the action {action}"
    for key in EXEMPT:
        assert key in offered, f"stale exemption {key}"


@pytest.mark.django_db
@pytest.mark.parametrize(("label", "op"), [o for o in OPERATIONS if o not in EXEMPT], ids=lambda v: str(v))
def test_every_admin_change_is_audited_with_the_request_id(client, root, label, op):
    case = CASES.get(label)
    assert case is not None, f"{label} can be changed in the admin: add a Case saying how"
    client.force_login(root)
    if op == "add":
        assert case.add is not None, f"{label} offers add: give its Case an add"
        url = _url(label, "add")
        data = form_data(client.get(url).content.decode(), _form_id(label), **case.add(), _save="Save")
        response = client.post(url, data)
    elif op == "change":
        assert case.change is not None and case.make is not None, f"{label} offers change: give its Case one"
        obj = case.make()
        url = _url(label, "change", obj.pk)
        data = form_data(client.get(url).content.decode(), _form_id(label), **case.change(obj), _save="Save")
        response = client.post(url, data)
    elif op == "delete":
        assert case.make is not None, f"{label} offers delete: give its Case a make"
        obj = case.make()
        response = client.post(_url(label, "delete", obj.pk), {"post": "yes"})
    else:
        action = op.split(":", 1)[1]
        assert action in case.actions, f"{label} offers the action {action}: add it to its Case"
        obj = case.actions[action]()
        data = {"action": action, "_selected_action": [str(obj.pk)], "index": "0"}
        if action == "delete_selected":
            data["post"] = "yes"
        response = client.post(_url(label, "changelist"), data)
    assert response.status_code == 302, _errors(response)
    assert _events(response), f"{op} of {label} succeeded but left no audit event with its request id"


def _errors(response) -> str:
    body = response.content.decode()
    start = body.find("errornote")
    return body[start - 200 : start + 2000] if start >= 0 else body[:2000]


@pytest.mark.django_db
def test_an_admin_setting_a_password_is_audited_without_the_password(client, root):
    dora = UserFactory(username="dora")
    client.force_login(root)
    from django.urls import reverse

    url = reverse("admin:auth_user_password_change", args=[dora.pk])
    secret = "another long passphrase"
    response = client.post(url, {"password1": secret, "password2": secret, "usable_password": "true"})
    assert response.status_code == 302, _errors(response)
    event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
    assert (event.action, event.actor, event.subject_text) == ("user.password_set", root, "dora")
    assert secret not in str(event.after)
    dora.refresh_from_db()
    assert dora.check_password(secret)


@pytest.mark.django_db
def test_a_user_changing_their_own_password_is_audited_and_stays_logged_in(client, alice, password):
    client.force_login(alice)
    new = "a completely new passphrase"
    response = client.post("/password/change/", {"old_password": password, "new_password1": new, "new_password2": new})
    assert response.status_code == 302
    event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
    assert (event.action, event.actor) == ("user.password_changed", alice)
    assert new not in str(event.after)
    assert client.get("/").status_code == 200  # the session survived the change


@pytest.mark.django_db
def test_a_user_edit_records_what_changed(client, root):
    dora = UserFactory(username="dora")
    ops = Group.objects.create(name="operators")
    client.force_login(root)
    url = _url("accounts.user", "change", dora.pk)
    data = form_data(client.get(url).content.decode(), "user_form", email="d@example.net", groups=[str(ops.pk)])
    response = client.post(url, data)
    assert response.status_code == 302, _errors(response)
    event = AuditEvent.objects.get(request_id=response["X-Request-ID"], action="user.updated")
    assert event.before == {"email": "dora@example.org", "groups": []}
    assert event.after == {"email": "d@example.net", "groups": ["operators"]}


@pytest.mark.django_db
def test_renaming_a_team_records_the_old_name(client, root):
    team = Team.objects.create(name="audio")
    client.force_login(root)
    url = _url("accounts.team", "change", team.pk)
    response = client.post(url, form_data(client.get(url).content.decode(), "team_form", name="speech"))
    assert response.status_code == 302, _errors(response)
    event = AuditEvent.objects.get(request_id=response["X-Request-ID"], action="team.updated")
    assert (event.before, event.after) == ({"name": "audio"}, {"name": "speech"})


@pytest.mark.django_db
def test_setup_schedules_records_the_schedules_it_adds_once():
    from django.core.management import call_command

    call_command("setup_schedules")
    added = AuditEvent.objects.filter(action="schedule.created").count()
    assert added == Schedule.objects.count() > 0
    call_command("setup_schedules")
    assert AuditEvent.objects.filter(action__startswith="schedule.").count() == added
