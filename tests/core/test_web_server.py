"""How the portal is served (portal/gunicorn.conf.py, `dev`, README "Deployment"): threads
over persistent database connections, sized to the host, overridable from the environment."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"


def _gunicorn_config(**env) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AXLE_WEB_")}
    full.update(env)
    result = subprocess.run(
        [str(GUNICORN), "--print-config", "--config", "portal/gunicorn.conf.py", "portal.wsgi:application"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"^(\w+)\s+= (.*)$", result.stdout, re.M))


def test_the_portal_runs_threaded_workers_one_more_than_the_cores():
    config = _gunicorn_config()
    assert config["worker_class"] == "gthread"
    assert int(config["workers"]) == (os.cpu_count() or 1) + 1
    assert int(config["threads"]) == 4
    assert int(config["keepalive"]) > 3, "a browser's connection outlives the 3 s between the job page's polls"
    assert int(config["max_requests"]) > 0 and int(config["max_requests_jitter"]) > 0


def test_a_bigger_host_sets_workers_and_threads_from_the_environment():
    config = _gunicorn_config(AXLE_WEB_WORKERS="9", AXLE_WEB_THREADS="8", AXLE_WEB_TIMEOUT="60")
    assert (config["workers"], config["threads"], config["timeout"]) == ("9", "8", "60")


def test_dev_starts_the_portal_with_that_configuration():
    dev = (ROOT / "dev").read_text()
    start = dev[dev.index('as_hub "$VENV/bin/gunicorn"') :]
    command = start[: start.index("--daemon")]
    assert '--config "$ROOT/portal/gunicorn.conf.py"' in command
    assert "--workers" not in command and "--threads" not in command, "one place decides the sizes"


def _database_settings(**env) -> str:
    full = {k: v for k, v in os.environ.items() if k != "DJANGO_CONN_MAX_AGE"}
    # The served settings (the suite's own keep a connection per request, settings/test.py).
    full.update({"DJANGO_SETTINGS_MODULE": "portal.settings.local", **env})
    code = "from django.conf import settings as s; d = s.DATABASES['default']; "
    code += "print(d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'])"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[-2:]


def test_database_connections_persist_a_minute_with_health_checks_unless_told():
    assert _database_settings() == ["60", "True"]
    assert _database_settings(DJANGO_CONN_MAX_AGE="0") == ["0", "True"]
