"""The lineage page's layout lives in apps.core.layout, so pipelines draw their DAG with it."""

from apps.core.layout import layout

__all__ = ["layout"]
