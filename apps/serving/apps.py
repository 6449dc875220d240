from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "apps.serving"
    label = "serving"

    def ready(self):
        from apps.lineage.graph import register_expander, register_kind
        from apps.registry.placements import register_live_provider

        from . import lineage, selectors

        register_kind("deployment", resolve=lineage.resolve_deployment)
        register_expander("model_version", "downstream", lineage.model_version_deployments)
        register_expander("deployment", "upstream", lineage.deployment_model_version)
        register_live_provider(selectors.live_placements)
