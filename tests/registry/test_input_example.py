# ruff: noqa: F811  (pytest fixtures imported from the serving tests, used as arguments)
"""The model's own input example, read from the real MLflow server."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from apps.registry.artifacts import model_version_input_example
from tests.serving.conftest import real_version, trained_model  # noqa: F401

pytestmark = [pytest.mark.mlflow, pytest.mark.django_db]


def test_the_example_logged_with_the_model_is_a_request_body(real_version, alice):
    cache.clear()
    example = model_version_input_example(version=real_version)
    # tests/serving/conftest.py logs the first two digits, scaled to 0..1, as input_example
    assert list(example) == ["inputs"]
    assert len(example["inputs"]) == 2 and len(example["inputs"][0]) == 64
    assert all(0.0 <= x <= 1.0 for x in example["inputs"][0])

    api = APIClient()
    api.force_authenticate(alice)
    body = api.get(f"/api/v1/models/{real_version.model.name}/versions/{real_version.number}/").json()
    assert body["input_example"] == example and body["live_in"] == []
