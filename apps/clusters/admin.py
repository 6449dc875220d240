"""Django admin for clusters and grants. Every save goes through the services, so what an
administrator does here is audited like everything else; stored secrets are never shown."""

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from apps.core.errors import ApplicationError
from apps.core.tasks import enqueue

from . import enforcement, services
from .forms import ClusterAdminForm, ClusterGrantAdminForm
from .models import Cluster, ClusterGrant

# The admin's front page lists the access requests waiting for a decision (oldest first).
admin.site.index_template = "admin/axle_index.html"


def _set_or_not(value: bool) -> str:
    return "set" if value else "not set"


def _health_html(cluster: Cluster):
    colour, text = {None: ("#9a6700", "unknown"), True: ("#1a7f37", "reachable"), False: ("#c0362c", "unreachable")}[
        cluster.reachable
    ]
    return format_html('<span style="color:{}">{}</span>', colour, text)


class ServiceSaveMixin:
    """When a service refuses at save time (a race the form could not foresee), say so and go
    back to the form instead of announcing success."""

    def _refused(self, request, exc: ApplicationError) -> None:
        request._axle_refused = True
        self.message_user(request, exc.message, messages.ERROR)

    def response_add(self, request, obj, post_url_continue=None):
        if getattr(request, "_axle_refused", False):
            return HttpResponseRedirect(request.path)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        if getattr(request, "_axle_refused", False):
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    def log_addition(self, request, obj, message):
        if not getattr(request, "_axle_refused", False):
            super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        if not getattr(request, "_axle_refused", False):
            super().log_change(request, obj, message)

    def has_delete_permission(self, request, obj=None):
        # History matters (jobs and the audit trail point here): deactivate or revoke instead.
        return False


@admin.register(Cluster)
class ClusterAdmin(ServiceSaveMixin, admin.ModelAdmin):
    form = ClusterAdminForm
    list_display = [
        "name",
        "transport",
        "is_active",
        "health",
        "checked_at",
        "short_error",
        "host_key_status",
        "jwt_key_status",
        "active_grants",
        "requested_grants",
        "slurm_enforcement",
    ]
    list_filter = ["transport", "is_active", "reachable"]
    search_fields = ["name", "description", "login_host"]
    actions = ["check_health_now"]
    readonly_fields = [
        "pinned_host_key",
        "host_key_fingerprint",
        "jwt_key_status",
        "health",
        "last_error",
        "checked_at",
        "state_summary",
        "enforcement_drift",
    ]
    fieldsets = [
        (None, {"fields": ["name", "description", "transport", "is_active"]}),
        (
            "Login node (SSH)",
            {
                "fields": [
                    "login_host",
                    "login_port",
                    "slurm_bin_dir",
                    "pinned_host_key",
                    "host_key_fingerprint",
                    "new_host_key",
                    "confirmed_fingerprint",
                ]
            },
        ),
        (
            "slurmrestd",
            {"fields": ["rest_url", "rest_api_version", "jwt_key_status", "jwt_key_file", "jwt_key_base64"]},
        ),
        ("Jobs", {"fields": ["job_root", "mlflow_tracking_uri"]}),
        ("Health", {"fields": ["health", "checked_at", "last_error", "state_summary"]}),
        ("Slurm enforces the grants", {"fields": ["operator_grant", "enforcement_drift"]}),
        ("Usage", {"fields": ["usage_all_jobs"]}),
    ]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "operator_grant":
            cluster_id = request.resolver_match.kwargs.get("object_id") if request.resolver_match else None
            kwargs["queryset"] = ClusterGrant.objects.filter(
                cluster_id=cluster_id, status=ClusterGrant.Status.ACTIVE
            ).select_related("user", "cluster")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="Slurm enforces grants", ordering="operator_grant")
    def slurm_enforcement(self, obj):
        if obj.grants_enforced_by_slurm:
            return "yes"
        return format_html(
            '<span title="{}">grants are not enforced by Slurm on this cluster</span>', obj.enforcement_note
        )

    @admin.display(description="grants in Slurm: desired against actual")
    def enforcement_drift(self, obj):
        report = obj.enforcement or {}
        if not report:
            return "not compared yet" if obj.operator_grant_id else obj.enforcement_note
        rows = [
            (user, entry.get("desired"), "; ".join(entry.get("drift") or []) or "none",
             entry.get("error") or ("corrected" if entry.get("corrected") else ""))
            for user, entry in sorted(report.get("users", {}).items())
        ]  # fmt: skip
        return format_html(
            "checked {} {}<table><tr><th>account</th><th>desired</th><th>drift found</th><th></th></tr>{}</table>{}",
            report.get("checked_at", ""),
            report.get("error", ""),
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
            " ".join(report.get("problems", [])),
        )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_active=Count("grants", filter=Q(grants__status=ClusterGrant.Status.ACTIVE)),
                n_requested=Count("grants", filter=Q(grants__status=ClusterGrant.Status.REQUESTED)),
            )
        )

    @admin.display(description="health", ordering="reachable")
    def health(self, obj):
        return _health_html(obj)

    @admin.display(description="last error")
    def short_error(self, obj):
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error

    @admin.display(description="host key")
    def host_key_status(self, obj):
        return "pinned" if obj.host_key.strip() else "not pinned"

    @admin.display(description="JWT signing key")
    def jwt_key_status(self, obj):
        return _set_or_not(obj.has_jwt_key)

    @admin.display(description="pinned host key")
    def pinned_host_key(self, obj):
        if not obj.host_key.strip():
            return "not pinned: Axle refuses to connect until a key is confirmed"
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", obj.host_key)

    @admin.display(description="active grants", ordering="n_active")
    def active_grants(self, obj):
        return obj.n_active

    @admin.display(description="requests", ordering="n_requested")
    def requested_grants(self, obj):
        return obj.n_requested

    @admin.display(description="partitions and nodes")
    def state_summary(self, obj):
        parts = obj.state.get("partitions", []) if obj.state else []
        nodes = obj.state.get("nodes", []) if obj.state else []
        if not parts and not nodes:
            return "not read yet"
        return format_html(
            "{} partition(s): {}; {} node(s): {}",
            len(parts),
            ", ".join(p["name"] for p in parts),
            len(nodes),
            format_html_join(", ", "{} ({}, {} CPUs)", ((n["name"], n["state"], n["cpus"]) for n in nodes)),
        )

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        config = {f: data[f] for f in services.CLUSTER_CONFIG_FIELDS if f in data}
        try:
            if change:
                cluster = services.cluster_update(cluster=Cluster.objects.get(pk=obj.pk), actor=request.user, **config)
                if "operator_grant" in data:
                    enforcement.cluster_set_operator(cluster=cluster, grant=data["operator_grant"], actor=request.user)
            else:
                cluster = services.cluster_create(actor=request.user, **config)
                obj.pk = cluster.pk
            if data.get("new_host_key", "").strip():
                services.cluster_set_host_key(
                    cluster=cluster,
                    host_key=data["new_host_key"],
                    confirmed_fingerprint=data["confirmed_fingerprint"],
                    actor=request.user,
                )
                self.message_user(request, f"Host key pinned: {cluster.host_key_fingerprint}.", messages.SUCCESS)
            if data.get("jwt_key"):
                services.cluster_set_jwt_key(cluster=cluster, key=data["jwt_key"], actor=request.user)
                self.message_user(request, "JWT signing key stored (encrypted).", messages.SUCCESS)
        except ApplicationError as exc:
            self._refused(request, exc)
        if obj.pk:
            obj.refresh_from_db()

    @admin.action(description="Check health now")
    def check_health_now(self, request, queryset):
        for cluster in queryset:
            enqueue("apps.clusters.tasks.cluster_refresh_health", cluster.pk)
        self.message_user(request, f"Health check queued for {queryset.count()} cluster(s).", messages.INFO)


@admin.register(ClusterGrant)
class ClusterGrantAdmin(ServiceSaveMixin, admin.ModelAdmin):
    form = ClusterGrantAdminForm
    list_display = [
        "user",
        "cluster",
        "cluster_username",
        "status_badge",
        "partitions",
        "limits",
        "credentials",
        "valid_until",
        "created_at",
    ]
    list_filter = ["status", "cluster"]
    list_select_related = ["user", "cluster"]
    # A search box, not a dropdown of every user.
    autocomplete_fields = ["user"]
    search_fields = ["user__username", "cluster__name", "cluster_username", "request_reason"]
    actions = ["approve_selected", "decline_selected", "revoke_selected", "resume_selected", "generate_ssh_keys"]
    readonly_fields = [
        "status",
        "request_reason",
        "decided_by",
        "decided_at",
        "decision_comment",
        "ssh_key_status",
        "ssh_public_key",
        "rest_token_status",
    ]
    ordering = ["status", "cluster__name", "user__username"]

    def get_fieldsets(self, request, obj=None):
        who = ["user", "cluster", "cluster_username"]
        decision = [
            (
                "Decision",
                {
                    "fields": [
                        "status",
                        "request_reason",
                        "decision",
                        "decision_note",
                        "decided_by",
                        "decided_at",
                        "decision_comment",
                    ]
                },
            )
        ]
        return [
            (None, {"fields": who}),
            *(decision if obj is not None else []),
            ("Limits", {"fields": list(services.LIMIT_FIELDS)}),
            (
                "SSH key",
                {
                    "fields": [
                        "ssh_key_status",
                        "ssh_public_key",
                        "generate_ssh_key",
                        "ssh_private_key_file",
                        "ssh_private_key_text",
                    ]
                },
            ),
            ("slurmrestd token", {"fields": ["rest_token_status", "rest_token", "rest_token_expires"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if obj is not None:
            # A grant is for one user on one cluster for good; grant anew rather than move it.
            fields += ["user", "cluster"]
        return fields

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        colour = {"active": "#1a7f37", "requested": "#9a6700"}.get(obj.status, "#667085")
        return format_html('<span style="color:{}">{}</span>', colour, obj.get_status_display())

    @admin.display(description="partitions")
    def partitions(self, obj):
        return ", ".join(obj.allowed_partitions) or "—"

    @admin.display(description="limits")
    def limits(self, obj):
        shown = [f"{label}: {value}" for label, value in obj.limit_rows() if label.startswith("Max")]
        return format_html_join(mark_safe("<br>"), "{}", ((line,) for line in shown))

    @admin.display(description="credentials")
    def credentials(self, obj):
        parts = []
        if obj.has_ssh_key:
            parts.append("SSH key")
        if obj.has_rest_token:
            parts.append("REST token")
        return ", ".join(parts) or "none"

    @admin.display(description="SSH private key")
    def ssh_key_status(self, obj):
        return _set_or_not(obj.has_ssh_key)

    @admin.display(description="slurmrestd token")
    def rest_token_status(self, obj):
        if not obj.has_rest_token:
            return "not set"
        if obj.rest_token_expires_at:
            return f"set, expires {obj.rest_token_expires_at:%Y-%m-%d %H:%M %Z}"
        return "set, no expiry given"

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        limits = {f: data[f] for f in services.LIMIT_FIELDS if f in data}
        try:
            if change:
                grant = ClusterGrant.objects.select_related("cluster", "user").get(pk=obj.pk)
                services.grant_update_limits(
                    grant=grant, actor=request.user, cluster_username=data.get("cluster_username", ""), **limits
                )
                self._decide(request, grant, data.get("decision"), data.get("decision_note", ""))
            else:
                grant = services.grant_create(
                    user=data["user"],
                    cluster=data["cluster"],
                    cluster_username=data["cluster_username"],
                    actor=request.user,
                    **limits,
                )
                obj.pk = grant.pk
            self._credentials(request, grant, data)
        except ApplicationError as exc:
            self._refused(request, exc)
        if obj.pk:
            obj.refresh_from_db()

    def _decide(self, request, grant: ClusterGrant, decision: str | None, note: str) -> None:
        if decision == "approve":
            services.grant_approve(
                grant=grant, actor=request.user, cluster_username=grant.cluster_username, comment=note
            )
        elif decision == "decline":
            services.grant_decline(grant=grant, actor=request.user, comment=note)
        elif decision == "revoke":
            services.grant_revoke(grant=grant, actor=request.user, comment=note)

    def _credentials(self, request, grant: ClusterGrant, data: dict) -> None:
        if data.get("generate_ssh_key"):
            public = services.grant_generate_ssh_key(grant=grant, actor=request.user)
            self._show_public_key(request, grant, public)
        elif data.get("ssh_private_key"):
            services.grant_set_ssh_key(grant=grant, private_key=data["ssh_private_key"], actor=request.user)
            self.message_user(request, "Private key stored (encrypted).", messages.SUCCESS)
        if (data.get("rest_token") or "").strip():
            services.grant_set_rest_token(
                grant=grant, token=data["rest_token"], expires_at=data.get("rest_token_expires"), actor=request.user
            )
            self.message_user(request, "slurmrestd token stored (encrypted).", messages.SUCCESS)

    def _show_public_key(self, request, grant: ClusterGrant, public: str) -> None:
        self.message_user(
            request,
            format_html(
                "New SSH key pair for {} on {}. Install this public key in {}'s ~/.ssh/authorized_keys on the "
                "cluster (the private key stays encrypted in Axle):"
                "<pre style='white-space:pre-wrap;user-select:all'>{}</pre>",
                grant.user,
                grant.cluster,
                grant.cluster_username or "the user",
                public,
            ),
            messages.SUCCESS,
        )

    def _bulk(self, request, queryset, label: str, act) -> None:
        done, refused = 0, []
        for grant in queryset.select_related("user", "cluster"):
            try:
                act(grant)
                done += 1
            except ApplicationError as exc:
                refused.append(f"{grant}: {exc.message}")
        if done:
            self.message_user(request, f"{label} {done} grant(s).", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.ERROR)

    @admin.action(description="Approve selected requests")
    def approve_selected(self, request, queryset):
        def approve(grant):
            if not grant.cluster_username:
                raise ApplicationError("set its cluster username first (open the grant).")
            services.grant_approve(grant=grant, actor=request.user, cluster_username=grant.cluster_username)

        self._bulk(request, queryset, "Approved", approve)

    @admin.action(description="Decline selected requests")
    def decline_selected(self, request, queryset):
        self._bulk(request, queryset, "Declined", lambda g: services.grant_decline(grant=g, actor=request.user))

    @admin.action(description="Revoke selected grants")
    def revoke_selected(self, request, queryset):
        self._bulk(request, queryset, "Revoked", lambda g: services.grant_revoke(grant=g, actor=request.user))

    @admin.action(description="Resume selected suspended grants")
    def resume_selected(self, request, queryset):
        self._bulk(request, queryset, "Resumed", lambda g: services.grant_resume(grant=g, actor=request.user))

    @admin.action(description="Generate SSH key pairs (for grants without a key)")
    def generate_ssh_keys(self, request, queryset):
        def generate(grant):
            if grant.has_ssh_key:
                raise ApplicationError("it has a key already; to replace it, open the grant and tick “Generate”.")
            if grant.status in ClusterGrant.TERMINAL:
                raise ApplicationError(f"it is {grant.status}.")
            self._show_public_key(request, grant, services.grant_generate_ssh_key(grant=grant, actor=request.user))

        self._bulk(request, queryset, "Made key pairs for", generate)
