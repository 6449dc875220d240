from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self):
        # Core cannot import the audit app (it is below it); hand it the recorder instead.
        from apps.core import audit_hook

        from . import checks  # noqa: F401  (registers the deploy check)
        from .services import audit_record, audit_record_many

        audit_hook.register_recorder(audit_record, audit_record_many)
