"""Pipeline outputs in lineage: job -produced-> output -input_of-> job, so a model version a
pipeline's last step registered traces back through every step and the folders they handed on.
A cached step's output is the earlier one, reused: original -reused_as-> output."""

from __future__ import annotations

import uuid

from django.urls import reverse

from apps.pipelines.models import StepOutput, StepRun

from .builtin import _jobs, job_node
from .graph import Node, register_expander, register_kind


def _outputs(user):
    return StepOutput.objects.filter(step__run__pipeline__team__memberships__user=user).select_related(
        "step__run__pipeline", "step__job", "reused_from__step__run"
    )


def output_node(out: StepOutput) -> Node:
    run = out.step.run
    attrs = {
        "pipeline": run.pipeline.name,
        "run": run.number,
        "step": out.step.name,
        "sha256": out.sha256,
        "size": out.size,
        "path": out.path,
    }
    if out.reused_from_id:
        attrs["reused_from_run"] = out.reused_from.step.run.number
    return Node(
        id=f"pipeline_output:{out.uuid}",
        kind="pipeline_output",
        label=f"{out.step.name}.{out.name}",
        url=reverse("pipeline-run-detail", args=[run.uuid]),
        attrs=attrs,
    )


def resolve_output(*, user, id: uuid.UUID) -> Node | None:
    out = _outputs(user).filter(uuid=id).first()
    return output_node(out) if out else None


def _consumers(outputs: list[StepOutput]):
    """(output, consuming step) for each output: the steps of the same run whose spec binds an
    input to it."""
    by_run: dict[int, list[StepOutput]] = {}
    for out in outputs:
        by_run.setdefault(out.step.run_id, []).append(out)
    for run_id, outs in by_run.items():
        run = outs[0].step.run
        wanted = {(o.step.name, o.name): o for o in outs}
        steps = {s.name: s for s in StepRun.objects.filter(run_id=run_id)}
        for spec_step in (run.spec or {}).get("steps", []):
            for src, out_name in (spec_step.get("inputs") or {}).values():
                if (src, out_name) in wanted and spec_step["name"] in steps:
                    yield wanted[(src, out_name)], steps[spec_step["name"]]


def job_outputs(*, user, ids):
    """job -produced-> pipeline_output"""
    for out in _outputs(user).filter(step__job__uuid__in=ids, reused_from__isnull=True):
        yield str(out.step.job.uuid), output_node(out), "produced"


def output_job(*, user, ids):
    """job -produced-> pipeline_output"""
    outs = list(_outputs(user).filter(uuid__in=ids, step__job__isnull=False))
    jobs = {j.pk: j for j in _jobs(user).filter(pk__in=[o.step.job_id for o in outs])}
    for out in outs:
        if out.step.job_id in jobs:
            yield str(out.uuid), job_node(jobs[out.step.job_id]), "produced"


def output_consumers(*, user, ids):
    """pipeline_output -input_of-> job, original -reused_as-> output"""
    outs = list(_outputs(user).filter(uuid__in=ids))
    pairs = list(_consumers(outs))
    jobs = {j.pk: j for j in _jobs(user).filter(pk__in=[s.job_id for _, s in pairs if s.job_id])}
    for out, step in pairs:
        if step.job_id in jobs:
            yield str(out.uuid), job_node(jobs[step.job_id]), "input_of"
    for reuse in _outputs(user).filter(reused_from__uuid__in=ids):
        yield str(reuse.reused_from.uuid), output_node(reuse), "reused_as"


def job_inputs(*, user, ids):
    """pipeline_output -input_of-> job"""
    steps = list(StepRun.objects.filter(job__uuid__in=ids).select_related("run", "job"))
    for step in steps:
        spec_step = next((s for s in (step.run.spec or {}).get("steps", []) if s["name"] == step.name), None)
        if not spec_step or not spec_step.get("inputs"):
            continue
        wanted = {(src, out) for src, out in spec_step["inputs"].values()}
        for out in _outputs(user).filter(step__run=step.run, step__name__in={w[0] for w in wanted}):
            if (out.step.name, out.name) in wanted:
                yield str(step.job.uuid), output_node(out), "input_of"


def output_original(*, user, ids):
    """original -reused_as-> output"""
    for out in _outputs(user).filter(uuid__in=ids, reused_from__isnull=False):
        original = _outputs(user).filter(pk=out.reused_from_id).first()
        if original is not None:
            yield str(out.uuid), output_node(original), "reused_as"


register_kind("pipeline_output", resolve=resolve_output)
register_expander("job", "downstream", job_outputs)
register_expander("pipeline_output", "upstream", output_job)
register_expander("pipeline_output", "downstream", output_consumers)
register_expander("job", "upstream", job_inputs)
register_expander("pipeline_output", "upstream", output_original)
