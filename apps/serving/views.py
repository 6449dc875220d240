import json

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.audit.models import AuditEvent
from apps.core.errors import ApplicationError, NotFound
from apps.registry.artifacts import model_version_input_example
from apps.registry.selectors import model_version_by_number, registered_model_get

from . import policy, selectors, services
from .models import Deployment

D = Deployment.Status


def _deployment(request, deployment_id) -> Deployment:
    try:
        return selectors.deployment_get(user=request.user, id=deployment_id)
    except NotFound:
        raise Http404("No such deployment.") from None


def deployment_list(request):
    deployments = selectors.deployment_list(user=request.user)
    environments = selectors.environment_list(user=request.user)
    live = {
        env: [d for d in deployments if d.environment_id == env.pk and d.status == Deployment.Status.LIVE]
        for env in environments
    }
    return render(
        request,
        "serving/list.html",
        {
            "environments": environments,
            "live": live,
            "deployments": deployments[:100],
            "inbox_count": selectors.waiting_count(user=request.user),
        },
    )


def deployment_inbox(request):
    rows = []
    waiting = selectors.inbox(user=request.user)
    live = selectors.live_for(waiting)
    for d in waiting:
        current = live.get((d.environment_id, d.model_version.model_id))
        names = sorted(set(d.model_version.metrics) | set(current.model_version.metrics if current else {}))
        rows.append(
            {
                "deployment": d,
                "current": current,
                "metrics": [
                    (n, d.model_version.metrics.get(n), current.model_version.metrics.get(n) if current else None)
                    for n in names
                ],
            }
        )
    return render(request, "serving/inbox.html", {"rows": rows})


def deployment_new(request):
    params = request.POST if request.method == "POST" else request.GET
    error = None
    try:
        model = registered_model_get(user=request.user, name=params.get("model", ""))
        version = model_version_by_number(user=request.user, model=model, number=int(params.get("version", "0")))
    except (NotFound, ValueError):
        raise Http404("No such model version.") from None
    if request.method == "POST":
        try:
            canary = int(params["canary_percent"]) if params.get("canary_percent") else None
            resources = {k: params[k] for k in ("cpu", "memory") if params.get(k)}
            environment = selectors.environment_get(user=request.user, ident=params.get("environment", ""))
            deployment = services.deployment_request(
                user=request.user,
                model_version=version,
                environment=environment,
                reason=params.get("reason", ""),
                resources=resources,
                canary_percent=canary,
            )
        except ValueError:
            error = "The canary percentage must be a whole number."
        except ApplicationError as exc:
            error = exc.message
        else:
            messages.success(request, f"Deployment of {version} to {deployment.environment.name} requested.")
            return redirect("deployment-detail", deployment_id=deployment.uuid)
    return render(
        request,
        "serving/new.html",
        {
            "version": version,
            "environments": selectors.environment_list(user=request.user),
            "error": error,
            "form": params,
        },
    )


# Seconds between the deployment page's "did anything change?" questions: often while it
# waits for a decision or a server, seldom while it is live (a server may still fail).
POLL_SECONDS = {D.REQUESTED: 3, D.APPROVED: 2, D.DEPLOYING: 2, D.LIVE: 15, D.FAILED: 10, D.RETIRED: 15}


def _state(deployment: Deployment) -> str:
    """Changes whenever anything the page shows changes: status, decisions, URL, error."""
    decisions = deployment.approvals.count()
    changed = int(deployment.updated_at.timestamp() * 1000)
    return f"{deployment.status}.{decisions}.{changed}.{len(deployment.last_error)}.{len(deployment.url)}"


def _example(deployment: Deployment) -> tuple[str, str, str]:
    """(JSON text, where it came from, a note) for the "Try it" box."""
    try:
        example = model_version_input_example(version=deployment.model_version)
    except ApplicationError as exc:
        return "{}", "", exc.message
    if example is None:
        return "{}", "", "The model was logged without an input_example or signature; write the request yourself."
    return json.dumps(example, indent=1), "the model's own MLflow example", ""


def deployment_detail(request, deployment_id):
    deployment = _deployment(request, deployment_id)
    state = _state(deployment)
    if request.GET.get("state") == state and request.headers.get("HX-Request"):
        return HttpResponse(status=204)  # nothing changed: htmx keeps the page as it is
    allowed, why = policy.can_approve(request.user, deployment)
    timeline = AuditEvent.objects.filter(subject_type="serving.deployment", subject_id=str(deployment.uuid)).order_by(
        "seq"
    )
    example, example_source, example_note = _example(deployment) if deployment.status == D.LIVE else ("", "", "")
    context = {
        "d": deployment,
        "state": state,
        "poll_seconds": POLL_SECONDS.get(deployment.status),
        "can_decide": allowed and deployment.status == D.REQUESTED,
        "can_withdraw": deployment.status == D.REQUESTED and request.user.pk == deployment.requested_by_id,
        "why_not": why,
        "timeline": timeline,
        "example": example,
        "example_source": example_source,
        "example_note": example_note,
        "valid_approvals": policy.valid_approvals(deployment).count(),
        "required": policy.required_approvals(deployment),
    }
    if request.headers.get("HX-Request"):
        return render(request, "serving/_deployment.html", context)
    return render(request, "serving/detail.html", context)


def _action(request, deployment_id, action):
    deployment = _deployment(request, deployment_id)
    comment = request.POST.get("comment", "")
    try:
        if action in ("approve", "reject"):
            decide = services.deployment_approve if action == "approve" else services.deployment_reject
            decided = decide(user=request.user, deployment=deployment, comment=comment)
            done = "Approved" if action == "approve" else "Rejected"
            if decided.status == D.REQUESTED:
                done += f" ({policy.valid_approvals(decided).count()} of {policy.required_approvals(decided)} so far)"
            following = selectors.next_waiting(user=request.user)
            if following is not None:
                # An approver works through a queue: the next request, not the one just decided.
                messages.success(
                    request, f"{done}: {deployment.model_version} → {deployment.environment.name}. Next waiting:"
                )
                return redirect("deployment-detail", deployment_id=following.uuid)
            messages.success(request, f"{done}. Nothing else waits for your decision.")
        elif action == "withdraw":
            services.deployment_withdraw(user=request.user, deployment=deployment)
            messages.success(request, "Request withdrawn: the approvers no longer see it.")
        elif action == "rollback":
            back = services.deployment_rollback(user=request.user, deployment=deployment)
            messages.success(request, f"Rolling back to {back.model_version}.")
            return redirect("deployment-detail", deployment_id=back.uuid)
        elif action == "retire":
            services.deployment_retire(user=request.user, deployment=deployment)
            messages.success(request, "Retired: the model server is stopped.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("deployment-detail", deployment_id=deployment.uuid)


@require_POST
def deployment_action(request, deployment_id, action):
    if action not in ("approve", "reject", "withdraw", "rollback", "retire"):
        raise Http404()
    return _action(request, deployment_id, action)


@require_POST
def deployment_try(request, deployment_id):
    """The "try it" form: send JSON to the model server, show the predictions (htmx fragment)."""
    deployment = _deployment(request, deployment_id)
    text = request.POST.get("payload", "")
    result, error = None, None
    try:
        payload = json.loads(text)
        result = json.dumps(
            services.deployment_predict(user=request.user, deployment=deployment, payload=payload), indent=2
        )
    except json.JSONDecodeError as exc:
        error = f"That is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
    except ApplicationError as exc:
        error = exc.message
    return render(request, "serving/_prediction.html", {"result": result, "error": error})
