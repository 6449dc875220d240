from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "apps.registry"
    label = "registry"

    def ready(self):
        from apps.jobs.signals import job_finalized

        from .signals import register_model_of_finalized_job

        job_finalized.connect(register_model_of_finalized_job, dispatch_uid="registry.register_model_of_finalized_job")
