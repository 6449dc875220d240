"""Deployments in the lineage graph: model_version -deployed_as-> deployment."""

import uuid

from django.urls import reverse

from apps.lineage.builtin import model_version_node
from apps.lineage.graph import Node

from .selectors import deployment_list


def deployment_node(d) -> Node:
    return Node(
        id=f"deployment:{d.uuid}",
        kind="deployment",
        label=f"{d.environment.name}: {d.model_version.model.name} v{d.model_version.number} ({d.status})",
        url=reverse("deployment-detail", args=[d.uuid]),
        attrs={
            "environment": d.environment.name,
            "status": d.status,
            "url": d.url,
            "artifact_sha256": d.artifact_sha256,
        },
    )


def resolve_deployment(*, user, id: uuid.UUID) -> Node | None:
    d = deployment_list(user=user).filter(uuid=id).first()
    return deployment_node(d) if d else None


def model_version_deployments(*, user, ids: list[str]):
    for d in deployment_list(user=user).filter(model_version__uuid__in=ids).select_related("model_version"):
        yield str(d.model_version.uuid), deployment_node(d), "deployed_as"


def deployment_model_version(*, user, ids: list[str]):
    for d in deployment_list(user=user).filter(uuid__in=ids).select_related("model_version__model"):
        yield str(d.uuid), model_version_node(d.model_version), "deployed_as"
