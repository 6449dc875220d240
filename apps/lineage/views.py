from django.http import Http404
from django.shortcuts import render

from apps.core.errors import ApplicationError

from . import selectors
from .layout import layout

KIND_NAMES = {
    "dataset_version": "Dataset version",
    "job": "Job",
    "sweep": "Sweep",
    "pipeline_output": "Pipeline output",
    "model_version": "Model version",
    "code": "Code",
    "image": "Image",
    "script": "Script",
}


def lineage(request, kind, id):
    try:
        graph = selectors.lineage(user=request.user, kind=kind, id=id)
    except ApplicationError:
        raise Http404("No such node.") from None
    drawing = layout(graph)
    focus = graph.nodes[graph.focus]
    kinds = sorted({n.kind for n in graph.nodes.values()})
    context = {
        "graph": graph,
        "drawing": drawing,
        "focus": focus,
        "focus_kind": KIND_NAMES.get(focus.kind, focus.kind.replace("_", " ").capitalize()),
        "legend": [(k, KIND_NAMES.get(k, k.replace("_", " ").capitalize())) for k in kinds],
        "edge_count": len(graph.edges),
    }
    return render(request, "lineage/graph.html", context)
