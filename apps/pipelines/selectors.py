"""Reads for pipelines. A pipeline belongs to its team: a member sees it and its runs; nobody
else learns they exist."""

from django.core.exceptions import ValidationError
from django.db.models import Count, Max, QuerySet

from apps.accounts.teams import team_owned
from apps.core.errors import NotFound

from .models import Pipeline, PipelineRun, StepRun


def pipeline_list(*, user, name: str = "", team: str = "") -> QuerySet[Pipeline]:
    rows = team_owned(Pipeline.objects.all(), user=user, team=team)
    if name:
        rows = rows.filter(name=name)
    return (
        rows.select_related("team", "owner", "cluster")
        .annotate(run_count=Count("runs"), last_run_at=Max("runs__created_at"))
        .order_by("team__name", "name")
    )


def pipeline_get(*, user, pipeline_id) -> Pipeline:
    try:
        row = (
            team_owned(Pipeline.objects.filter(uuid=pipeline_id), user=user)
            .select_related("team", "owner", "cluster", "grant")
            .first()
        )
    except ValidationError:
        row = None
    if row is None:
        raise NotFound("No such pipeline.")
    return row


def pipeline_run_list(*, user, pipeline: Pipeline | None = None, status: str = "") -> QuerySet[PipelineRun]:
    rows = team_owned(PipelineRun.objects.all(), user=user, via="pipeline__team")
    if pipeline is not None:
        rows = rows.filter(pipeline=pipeline)
    if status:
        rows = rows.filter(status=status)
    # The run's grant (and, for runs older than runs' own grants, the pipeline's): runs_as.
    return rows.select_related("pipeline__team", "triggered_by", "grant__user", "pipeline__grant__user").order_by(
        "-created_at"
    )


def pipeline_run_get(*, user, run_id) -> PipelineRun:
    try:
        run = (
            pipeline_run_list(user=user)
            .filter(uuid=run_id)
            .select_related("pipeline__grant__cluster", "grant__user")
            .first()
        )
    except ValidationError:
        run = None
    if run is None:
        raise NotFound("No such pipeline run.")
    return run


def step_list(*, run: PipelineRun) -> list[StepRun]:
    return list(run.steps.select_related("job", "cached_from__run").prefetch_related("outputs"))


def dag(*, run: PipelineRun, steps: list[StepRun]) -> dict:
    """The run's steps as a layered graph: each step in the column after its deepest need."""
    depth: dict[str, int] = {}
    for step in steps:  # topological order
        depth[step.name] = 1 + max((depth[n] for n in step.needs if n in depth), default=-1)
    columns: dict[int, list[StepRun]] = {}
    for step in steps:
        columns.setdefault(depth[step.name], []).append(step)
    width, height, gap_x, gap_y = 170, 56, 60, 24
    nodes, where = [], {}
    for col, members in sorted(columns.items()):
        for row, step in enumerate(members):
            x, y = 10 + col * (width + gap_x), 10 + row * (height + gap_y)
            where[step.name] = (x, y)
            nodes.append({"step": step, "x": x, "y": y, "w": width, "h": height})
    edges = []
    for step in steps:
        for need in step.needs:
            if need in where:
                (x1, y1), (x2, y2) = where[need], where[step.name]
                edges.append({"x1": x1 + width, "y1": y1 + height // 2, "x2": x2, "y2": y2 + height // 2})
    return {
        "nodes": nodes,
        "edges": edges,
        "width": 20 + (max(columns) + 1 if columns else 1) * (width + gap_x),
        "height": 20 + max((len(m) for m in columns.values()), default=1) * (height + gap_y),
    }
