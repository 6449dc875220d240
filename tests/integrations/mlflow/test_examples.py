"""A model's example request read from its MLmodel file, as MLflow writes it."""

import json

import pytest

from apps.integrations.mlflow.examples import ExampleUnreadable, serving_example

MLMODEL_WITH_EXAMPLE = """
flavors: {python_function: {loader_module: mlflow.sklearn}}
saved_input_example_info:
  artifact_path: input_example.json
  serving_input_path: serving_input_example.json
  type: ndarray
signature:
  inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]'
"""


def reader(files):
    def read(path):
        if path not in files:
            raise FileNotFoundError(path)
        return json.dumps(files[path]).encode()

    return read


def test_it_prefers_the_serving_example():
    files = {"serving_input_example.json": {"inputs": [[1, 2, 3, 4]]}, "input_example.json": [[9, 9, 9, 9]]}
    assert serving_example(MLMODEL_WITH_EXAMPLE, reader(files)) == {"inputs": [[1, 2, 3, 4]]}


def test_it_wraps_a_raw_ndarray_example_as_inputs():
    text = "saved_input_example_info: {artifact_path: input_example.json, type: ndarray}\n"
    assert serving_example(text, reader({"input_example.json": [[5, 6]]})) == {"inputs": [[5, 6]]}


def test_it_wraps_a_dataframe_example_as_dataframe_split():
    text = "saved_input_example_info: {artifact_path: input_example.json, type: dataframe, pandas_orient: split}\n"
    frame = {"columns": ["sepal", "petal"], "data": [[5.1, 1.4]]}
    assert serving_example(text, reader({"input_example.json": frame})) == {"dataframe_split": frame}


def test_without_an_example_the_signature_gives_the_shape():
    text = 'signature:\n  inputs: \'[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}}]\'\n'
    assert serving_example(text, reader({})) == {"inputs": [[0.0, 0.0, 0.0]]}


def test_a_column_signature_gives_a_frame_with_its_names():
    text = 'signature:\n  inputs: \'[{"type": "double", "name": "age"}, {"type": "string", "name": "city"}]\'\n'
    assert serving_example(text, reader({})) == {"dataframe_split": {"columns": ["age", "city"], "data": [[0.0, ""]]}}


def test_a_model_saying_nothing_has_no_example():
    assert serving_example("flavors: {}\n", reader({})) is None


def test_broken_files_are_said_to_be_unreadable():
    with pytest.raises(ExampleUnreadable, match="not YAML"):
        serving_example("a: [b\n", reader({}))
    text = "saved_input_example_info: {serving_input_path: s.json}\n"
    with pytest.raises(ExampleUnreadable, match="s.json is not JSON"):
        serving_example(text, lambda path: b"{nope")
