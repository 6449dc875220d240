import json

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.audit.models import AuditEvent
from apps.core.errors import ApplicationError, NotFound
from apps.registry.selectors import model_version_by_number, registered_model_get

from . import policy, selectors, services
from .models import Deployment


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
            "inbox_count": len(selectors.inbox(user=request.user)),
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


def deployment_detail(request, deployment_id):
    deployment = _deployment(request, deployment_id)
    allowed, why = policy.can_approve(request.user, deployment)
    timeline = AuditEvent.objects.filter(subject_type="serving.deployment", subject_id=str(deployment.uuid)).order_by(
        "seq"
    )
    example = json.dumps({"inputs": [[0.0] * 64]}) if deployment.model_version.model.name.startswith("digits") else "{}"
    return render(
        request,
        "serving/detail.html",
        {
            "d": deployment,
            "can_decide": allowed and deployment.status == Deployment.Status.REQUESTED,
            "why_not": why,
            "timeline": timeline,
            "example": example,
            "valid_approvals": policy.valid_approvals(deployment).count(),
            "required": policy.required_approvals(deployment),
        },
    )


def _action(request, deployment_id, action):
    deployment = _deployment(request, deployment_id)
    comment = request.POST.get("comment", "")
    try:
        if action == "approve":
            services.deployment_approve(user=request.user, deployment=deployment, comment=comment)
            messages.success(request, "Approved.")
        elif action == "reject":
            services.deployment_reject(user=request.user, deployment=deployment, comment=comment)
            messages.success(request, "Rejected.")
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
    if action not in ("approve", "reject", "rollback", "retire"):
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
