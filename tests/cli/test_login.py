"""`axle login` keeps a token that works, privately; every other answer is a clear message
with its exit code (3: not logged in or refused, 8: portal unreachable), never a traceback."""

import json

import pytest

from apps.accounts.models import ApiToken

from .conftest import mode

pytestmark = pytest.mark.slow


def test_login_checks_the_token_and_keeps_it_readable_by_its_owner_only(axle_for, alice):
    axle = axle_for(None, "alice")
    key = axle.login(alice)

    assert mode(axle.config) == 0o600 and mode(axle.config.parent) == 0o700
    text = axle.config.read_text()
    assert key in text and axle.url in text
    me = axle("whoami", "--json")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["username"] == "alice"
    # The token went in on stdin, never on a command line others can read.
    assert key not in " ".join(axle.env.values())


def test_a_wrong_token_is_refused_with_exit_3_and_nothing_is_stored(axle_for, alice):
    axle = axle_for(None, "alice")
    result = axle("login", "--url", axle.url, input="not-a-real-token\n")
    assert result.returncode == 3
    assert "refused this token" in result.stderr
    assert not axle.config.exists()


def test_login_with_a_password_makes_a_token(axle_for, alice, password):
    axle = axle_for(None, "alice")
    result = axle("login", "--url", axle.url, "--username", "alice", input=password + "\n")
    assert result.returncode == 0, result.stderr
    assert ApiToken.objects.filter(user=alice, name__startswith="axle CLI on").exists()
    wrong = axle("login", "--url", axle.url, "--username", "alice", input="wrong\n")
    assert wrong.returncode == 3 and "refused that username and password" in wrong.stderr


def test_without_a_login_or_with_a_revoked_token_commands_exit_3(axle_for, alice):
    axle = axle_for(None, "nobody")
    result = axle("jobs")
    assert result.returncode == 3 and "Not logged in" in result.stderr

    axle.login(alice)
    ApiToken.objects.filter(user=alice).update(revoked_at="2020-01-01T00:00:00Z")
    result = axle("jobs")
    assert result.returncode == 3 and "axle login" in result.stderr


def test_env_overrides_the_stored_login(axle_for, alice, bob):
    axle = axle_for(alice)
    from apps.accounts import services

    _, bobs = services.token_create(user=bob, name="env")
    result = axle("whoami", "--json", env={"AXLE_TOKEN": bobs})
    assert json.loads(result.stdout)["username"] == "bob"
    unreachable = axle("jobs", env={"AXLE_URL": "http://127.0.0.1:9"})
    assert unreachable.returncode == 8 and "Cannot reach the portal at http://127.0.0.1:9" in unreachable.stderr


COMMANDS = [
    [],
    ["login"],
    ["submit"],
    ["jobs"],
    ["status"],
    ["logs"],
    ["cancel"],
    ["clusters"],
    ["models"],
    ["sweep"],
    ["sweep", "submit"],
    ["sweep", "status"],
    ["sweep", "list"],
    ["pipeline"],
    ["pipeline", "run"],
    ["pipeline", "runs"],
    ["deploy"],
    ["deploy", "request"],
    ["deploy", "approve"],
    ["deploy", "status"],
]


def test_every_command_has_help_and_the_exit_codes_are_told(axle_installed, tmp_path):
    from .conftest import Axle

    axle = Axle("http://127.0.0.1:9", tmp_path)
    for command in COMMANDS:
        result = axle(*command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage: axle" in result.stdout, command
    assert "5 refused by validation" in axle("--help").stdout
    usage = axle("submit")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
