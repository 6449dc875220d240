from django.apps import AppConfig


class LineageConfig(AppConfig):
    """Lineage graphs across apps. No models: it reads the other apps' rows through kinds and
    expanders they (or builtin.py, for the core kinds) register."""

    name = "apps.lineage"
    label = "lineage"

    def ready(self) -> None:
        from . import (
            builtin,  # noqa: F401  registers dataset_version, job and model_version
            pipelines,  # noqa: F401  registers pipeline_output
            sweeps,  # noqa: F401  registers sweep
        )
