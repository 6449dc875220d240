"""Team-owned assets share one pattern (apps.accounts.teams): the same rules for datasets and
registered models, so a third kind cannot get them subtly different."""

import pytest

from apps.accounts.teams import team_get, team_member_require, team_owned, team_pick
from apps.core.errors import NotFound, PermissionDenied, ValidationFailed
from apps.datasets.models import Dataset
from apps.datasets.services import dataset_create
from apps.registry.models import RegisteredModel
from apps.registry.services import registered_model_create
from tests.factories import MembershipFactory, TeamFactory

pytestmark = pytest.mark.django_db

KINDS = {
    "datasets": ("/api/v1/datasets/", dataset_create, Dataset),
    "models": ("/api/v1/models/", registered_model_create, RegisteredModel),
}


@pytest.fixture
def audio(charlie):
    return MembershipFactory(user=charlie, team=TeamFactory(name="audio")).team


def test_team_get_finds_one_of_the_users_teams_by_name_or_id(alice, team, audio):
    assert team_get(user=alice, ident="vision") == team
    assert team_get(user=alice, ident=str(team.uuid)) == team
    with pytest.raises(NotFound):
        team_get(user=alice, ident="audio")
    with pytest.raises(NotFound):
        team_get(user=alice, ident=str(audio.uuid))


def test_only_members_pass_the_membership_check(alice, charlie, team):
    team_member_require(user=alice, team=team)
    with pytest.raises(PermissionDenied, match="not a member of team vision"):
        team_member_require(user=charlie, team=team)


def test_a_form_pick_must_be_one_of_the_offered_teams(team, audio):
    assert team_pick(teams=[team], name="vision") == team
    with pytest.raises(ValidationFailed, match="Pick one of your teams"):
        team_pick(teams=[team], name="audio")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_seen_by_its_team_only(kind, alice, bob, charlie, team, audio):
    _, create, model = KINDS[kind]
    mine = create(user=alice, team=team, name="shared-by-vision")
    theirs = create(user=charlie, team=audio, name="audio-only")
    assert list(team_owned(model.objects.all(), user=bob)) == [mine]
    assert list(team_owned(model.objects.all(), user=charlie)) == [theirs]
    assert list(team_owned(model.objects.all(), user=alice, team="audio")) == []
    with pytest.raises(PermissionDenied):
        create(user=charlie, team=team, name="sneaked-in")


@pytest.mark.parametrize("kind", KINDS)
def test_the_api_takes_the_team_by_name_or_id_and_hides_other_teams(kind, api, alice, team, audio):
    url, _, model = KINDS[kind]
    api.force_authenticate(alice)
    assert api.post(url, {"team": "vision", "name": "by-name"}, format="json").status_code == 201
    assert api.post(url, {"team": str(team.uuid), "name": "by-id"}, format="json").status_code == 201
    response = api.post(url, {"team": "audio", "name": "not-mine"}, format="json")
    assert response.status_code == 404
    assert response.json()["detail"] == "You are not in a team 'audio'."
    assert set(model.objects.values_list("name", flat=True)) == {"by-name", "by-id"}
    assert api.post(url, {"name": "no-team"}, format="json").status_code == 400
