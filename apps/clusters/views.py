from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from apps.core.errors import ApplicationError, NotFound

from . import selectors, services
from .forms import GrantRequestForm
from .models import Cluster, ClusterGrant

OPEN = {ClusterGrant.Status.REQUESTED, ClusterGrant.Status.ACTIVE}


def limit_rows(grant: ClusterGrant) -> list[tuple[str, str]]:
    """A grant's limits as a person reads them."""

    def names(values: list[str], blank: str) -> str:
        return ", ".join(values) if values else blank

    def number(value, unit: str = "") -> str:
        return f"{value}{unit}" if value is not None else "no limit"

    return [
        ("Partitions", names(grant.allowed_partitions, "the cluster's default only")),
        ("Accounts", names(grant.allowed_accounts, "your default account only")),
        ("QoS", names(grant.allowed_qos, "the default QoS only")),
        ("Nodes per job", number(grant.max_nodes)),
        ("CPUs per job", number(grant.max_cpus)),
        ("GPUs per job", number(grant.max_gpus)),
        ("Memory per job", number(grant.max_mem_mb, " MB")),
        ("Wall time", number(grant.max_time_minutes, " min")),
        ("Active jobs", number(grant.max_active_jobs)),
        ("Array size", number(grant.max_array_size)),
        ("Valid until", grant.valid_until.strftime("%Y-%m-%d %H:%M %Z") if grant.valid_until else "no end date"),
    ]


def cluster_list(request):
    mine = selectors.grant_mine_by_cluster(user=request.user)
    rows = [(cluster, mine.get(cluster.pk)) for cluster in selectors.cluster_list(user=request.user)]
    return render(request, "clusters/list.html", {"rows": rows, "open_statuses": OPEN})


def _cluster_or_404(request, name: str) -> Cluster:
    try:
        return selectors.cluster_get(user=request.user, ident=name)
    except NotFound:
        raise Http404(f"No cluster {name}.") from None


def _detail(request, cluster: Cluster, form: GrantRequestForm, status: int = 200):
    grants = [g for g in selectors.grant_list(user=request.user) if g.cluster_id == cluster.pk]
    grant = selectors.grant_mine_by_cluster(user=request.user).get(cluster.pk)
    state = cluster.state or {}
    context = {
        "cluster": cluster,
        "grant": grant,
        "limits": limit_rows(grant) if grant else [],
        "history": [g for g in grants if g != grant],
        "can_request": cluster.is_active and (grant is None or grant.status not in OPEN),
        "form": form,
        "partitions": state.get("partitions", []),
        "nodes": state.get("nodes", []),
        "state_read_at": parse_datetime(state["read_at"]) if state.get("read_at") else None,
    }
    return render(request, "clusters/detail.html", context, status=status)


def cluster_detail(request, name: str):
    return _detail(request, _cluster_or_404(request, name), GrantRequestForm())


@require_POST
def cluster_request_access(request, name: str):
    cluster = _cluster_or_404(request, name)
    form = GrantRequestForm(request.POST)
    if form.is_valid():
        try:
            services.grant_request(user=request.user, cluster=cluster, reason=form.cleaned_data["reason"])
        except ApplicationError as exc:
            form.add_error("reason", exc.message)
        else:
            messages.success(
                request, f"Access to {cluster.name} requested. An administrator will approve or decline it."
            )
            return redirect("cluster-detail", name=cluster.name)
    return _detail(request, cluster, form, status=400)


def grant_list(request):
    grants = list(selectors.grant_list(user=request.user))
    for grant in grants:
        grant.limit_rows = limit_rows(grant)
    return render(request, "clusters/grants.html", {"grants": grants})
