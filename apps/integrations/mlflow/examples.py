"""A model's own example request, read from its MLmodel file (pure functions, no I/O).

`mlflow.<flavor>.log_model(..., input_example=...)` saves the example next to the model and
names it in MLmodel under `saved_input_example_info`: `serving_input_path` is the example
already in the scoring server's request format (MLflow ≥ 2.13), `artifact_path` the raw
example (an ndarray or a pandas frame in "split" orient). A model logged with a signature
but no example still says what it takes: a request of zeros (or empty strings) of that shape
is built from it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

MAX_EXAMPLE_BYTES = 256 * 1024
_ZERO = {"string": "", "str": "", "boolean": False, "bool": False, "binary": ""}


class ExampleUnreadable(ValueError):
    """The MLmodel file or the example it names cannot be read as MLflow writes them."""


def _json(read: Callable[[str], bytes], path: str) -> Any:
    data = read(path)
    if len(data) > MAX_EXAMPLE_BYTES:
        raise ExampleUnreadable(f"{path} is larger than {MAX_EXAMPLE_BYTES // 1024} KiB.")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ExampleUnreadable(f"{path} is not JSON: {exc}") from None


def _zero(dtype: str) -> Any:
    return _ZERO.get(str(dtype).lower(), 0.0)


def _from_signature(inputs_json: str) -> dict | None:
    try:
        inputs = json.loads(inputs_json)
    except (TypeError, ValueError):
        return None
    if not isinstance(inputs, list) or not inputs:
        return None
    if all(i.get("type") == "tensor" for i in inputs):
        spec = inputs[0].get("tensor-spec", {})
        shape = [1 if (d is None or d < 0) else d for d in spec.get("shape") or [1]]
        value: Any = _zero(spec.get("dtype", "float"))
        for size in reversed(shape):
            if size > 1024:
                return None  # an image or the like: zeros would only be noise
            value = [value] * size
        return {"inputs": value}
    columns = [i.get("name") for i in inputs]
    if all(columns):
        return {"dataframe_split": {"columns": columns, "data": [[_zero(i.get("type", "")) for i in inputs]]}}
    return None


def serving_example(mlmodel_text: str, read: Callable[[str], bytes]) -> dict | None:
    """The request body (`{"inputs": …}` or `{"dataframe_split": …}`) to try the model with,
    or None when the model says nothing about its input. `read(path)` returns a file of the
    model's folder."""
    try:
        mlmodel = yaml.safe_load(mlmodel_text) or {}
    except yaml.YAMLError as exc:
        raise ExampleUnreadable(f"MLmodel is not YAML: {exc}") from None
    if not isinstance(mlmodel, dict):
        raise ExampleUnreadable("MLmodel is not a mapping.")
    info = mlmodel.get("saved_input_example_info") or {}
    if info.get("serving_input_path"):
        example = _json(read, info["serving_input_path"])
        if isinstance(example, dict):
            return example
    if info.get("artifact_path"):
        example = _json(read, info["artifact_path"])
        if info.get("type") == "dataframe" and isinstance(example, dict):
            return {"dataframe_split": example}
        if isinstance(example, dict) and info.get("type") == "json_object":
            return example
        return {"inputs": example}
    signature = mlmodel.get("signature") or {}
    if signature.get("inputs"):
        return _from_signature(signature["inputs"])
    return None
