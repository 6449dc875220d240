from django import forms
from django.contrib import admin, messages

from apps.audit.services import audit_record
from apps.core import crypto
from apps.core.errors import ApplicationError

from . import policy, services
from .models import Deployment, DeploymentApproval, Environment


class EnvironmentForm(forms.ModelForm):
    kubeconfig = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="Paste a kubeconfig for KServe environments. Stored encrypted; never shown again.",
    )

    class Meta:
        model = Environment
        fields = [
            "name",
            "description",
            "required_approvals",
            "approver_role",
            "approver_team",
            "backend",
            "namespace",
            "is_active",
        ]


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    form = EnvironmentForm
    list_display = [
        "name",
        "backend",
        "namespace",
        "required_approvals",
        "approver_role",
        "approver_team",
        "kubeconfig_set",
        "is_active",
    ]

    @admin.display(boolean=True, description="kubeconfig")
    def kubeconfig_set(self, obj):
        return bool(obj.kubeconfig_encrypted)

    def save_model(self, request, obj, form, change):
        before = None
        if change:
            old = Environment.objects.get(pk=obj.pk)
            before = {
                f: getattr(old, f)
                for f in (
                    "required_approvals",
                    "approver_role",
                    "approver_team_id",
                    "backend",
                    "namespace",
                    "is_active",
                )
            }
        if form.cleaned_data.get("kubeconfig"):
            obj.kubeconfig_encrypted = crypto.encrypt(form.cleaned_data["kubeconfig"])
        super().save_model(request, obj, form, change)
        audit_record(
            action="environment.updated" if change else "environment.created",
            subject=obj,
            actor=request.user,
            before=before,
            after={
                "required_approvals": obj.required_approvals,
                "approver_role": obj.approver_role,
                "approver_team_id": obj.approver_team_id,
                "backend": obj.backend,
                "namespace": obj.namespace,
                "is_active": obj.is_active,
                "kubeconfig": "set" if obj.kubeconfig_encrypted else "not set",
            },
        )

    def has_delete_permission(self, request, obj=None):
        return False


class ApprovalInline(admin.TabularInline):
    model = DeploymentApproval
    extra = 0
    can_delete = False
    readonly_fields = ["approver", "decision", "comment", "artifact_sha256", "created_at"]

    def has_add_permission(self, request, obj=None):
        # Decisions go through the approve/reject actions, which apply the four-eyes rule.
        return False


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["model_version", "environment", "status", "requested_by", "approvals_needed", "created_at", "url"]
    list_filter = ["status", "environment"]
    inlines = [ApprovalInline]
    actions = ["approve_selected", "reject_selected"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Deployment._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # every field is read-only; decisions go through the actions

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="approvals needed")
    def approvals_needed(self, obj):
        return policy.required_approvals(obj)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("environment", "model_version__model", "requested_by")

    def _decide(self, request, queryset, decide, verb):
        for deployment in queryset:
            allowed, why = policy.can_approve(request.user, deployment)
            if not allowed:
                self.message_user(request, f"{deployment}: {why}", level=messages.ERROR)
                continue
            try:
                decide(user=request.user, deployment=deployment, comment=f"{verb} in the admin")
                self.message_user(request, f"{deployment}: {verb}.")
            except ApplicationError as exc:
                self.message_user(request, f"{deployment}: {exc.message}", level=messages.ERROR)

    @admin.action(description="Approve selected requests (never your own)")
    def approve_selected(self, request, queryset):
        self._decide(request, queryset, services.deployment_approve, "approved")

    @admin.action(description="Reject selected requests (never your own)")
    def reject_selected(self, request, queryset):
        self._decide(request, queryset, services.deployment_reject, "rejected")


@admin.register(DeploymentApproval)
class DeploymentApprovalAdmin(admin.ModelAdmin):
    list_display = ["deployment", "approver", "decision", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in DeploymentApproval._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
