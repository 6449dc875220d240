import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args, **env):
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_URL", "AXLE_MLFLOW_USERNAME", "AXLE_MLFLOW_PASSWORD"))
    }
    full.update(
        DJANGO_SETTINGS_MODULE="portal.settings.production",
        DATABASE_URL="sqlite:////tmp/axle-deploy-check.db",
        AXLE_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        AXLE_AUDIT_KEY=secrets.token_urlsafe(32),
        AXLE_MLFLOW_USERNAME="axle-hub",
        AXLE_MLFLOW_PASSWORD=secrets.token_urlsafe(24),
    )
    full.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_production_settings_pass_the_deploy_check():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="axle.example.org",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("key", ["", "change-me", "django-insecure-" + "x" * 60])
def test_production_refuses_to_start_without_a_real_secret_key(key):
    result = _manage("check", DJANGO_SECRET_KEY=key)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_secret_key_may_come_from_a_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(secrets.token_urlsafe(50) + "\n")
    result = _manage("check", DJANGO_SECRET_KEY_FILE=str(key_file), DJANGO_ALLOWED_HOSTS="axle.example.org")
    assert result.returncode == 0, result.stderr


@pytest.mark.django_db
def test_the_openapi_schema_describes_the_api(client, alice):
    client.force_login(alice)
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert "/api/v1/auth/token/" in response.json()["paths"]
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.slow
def test_production_refuses_to_start_without_an_encryption_key():
    result = _manage(
        "check", DJANGO_SECRET_KEY=secrets.token_urlsafe(50), DJANGO_ALLOWED_HOSTS="x.org", AXLE_ENCRYPTION_KEYS=""
    )
    assert result.returncode != 0 and "AXLE_ENCRYPTION_KEYS" in result.stderr


def _import_server_module(module: str, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "AXLE_"))}
    full.update(DATABASE_URL="sqlite:////tmp/axle-deploy-check.db", AXLE_HUB_DIR="/tmp/axle-wsgi-check")
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.parametrize("module", ["portal.wsgi", "portal.asgi"])
def test_a_server_started_without_settings_gets_production_and_refuses_to_invent_keys(module, tmp_path):
    result = _import_server_module(module, AXLE_HUB_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no key file made on the side


@pytest.mark.slow
@pytest.mark.parametrize("module", ["portal.wsgi", "portal.asgi"])
def test_a_server_started_with_production_secrets_loads(module):
    result = _import_server_module(
        module,
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="axle.example.org",
        AXLE_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        AXLE_AUDIT_KEY=secrets.token_urlsafe(32),
        AXLE_MLFLOW_USERNAME="axle-hub",
        AXLE_MLFLOW_PASSWORD=secrets.token_urlsafe(24),
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_production_refuses_to_start_without_an_audit_key():
    result = _manage(
        "check", DJANGO_SECRET_KEY=secrets.token_urlsafe(50), DJANGO_ALLOWED_HOSTS="x.org", AXLE_AUDIT_KEY=""
    )
    assert result.returncode != 0 and "AXLE_AUDIT_KEY" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["AXLE_MLFLOW_USERNAME", "AXLE_MLFLOW_PASSWORD"])
def test_production_refuses_to_start_without_an_mlflow_login(missing):
    result = _manage(
        "check", DJANGO_SECRET_KEY=secrets.token_urlsafe(50), DJANGO_ALLOWED_HOSTS="x.org", **{missing: ""}
    )
    assert result.returncode != 0 and missing in result.stderr and "--app-name basic-auth" in result.stderr
    assert "Traceback" not in result.stderr
