from django.apps import AppConfig


class PipelineTriggersConfig(AppConfig):
    name = "apps.pipelines.triggers"
    label = "pipeline_triggers"
    verbose_name = "Pipeline triggers"
