"""The client's own rules, without a portal: where the token is kept and how, which setting
wins, and how the API's refusals are read (field paths kept, nested fields flattened)."""

import os

import pytest
from axle_client import config as config_mod
from axle_client.client import _message

from .conftest import mode


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in ("AXLE_URL", "AXLE_TOKEN", "AXLE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path


def test_the_token_is_written_0600_whatever_the_umask_and_replaced_whole(home):
    old = os.umask(0)
    try:
        path = config_mod.save(url="http://hub:8000", token="first", username="alice")
        path = config_mod.save(url="http://hub:8000", token='se"cr\\et', username="alice")
    finally:
        os.umask(old)
    assert path == home / "axle" / "config.toml"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary file left
    cfg = config_mod.load()
    assert (cfg.url, cfg.token, cfg.username) == ("http://hub:8000", 'se"cr\\et', "alice")


def test_the_environment_wins_over_the_file(home, monkeypatch):
    config_mod.save(url="http://hub:8000", token="from-file", username="alice")
    monkeypatch.setenv("AXLE_TOKEN", "from-env")
    monkeypatch.setenv("AXLE_URL", "https://other/")
    cfg = config_mod.load()
    assert (cfg.url, cfg.token, cfg.source) == ("https://other", "from-env", "AXLE_TOKEN")


def test_refusals_keep_the_portals_message_and_problems_and_flatten_field_errors():
    body = {"detail": "The job does not fit your grant: line 2: no", "problems": [{"line": 2, "message": "no"}]}
    assert _message(body) == (body["detail"], [{"line": 2, "message": "no"}])
    fields = {"code": {"repo": ["This field is required."]}, "parameters": ["Bad name."], "x": [{"y": ["z"]}]}
    assert _message(fields) == ("code.repo: This field is required.; parameters: Bad name.; x[0].y: z", [])
    assert _message("<html>Bad gateway</html>") == ("<html>Bad gateway</html>", [])
