import pytest

from apps.accounts.models import Membership
from apps.audit.models import AuditEvent


@pytest.mark.django_db
def test_role_changes_in_the_admin_are_audited(client, root, alice, team):
    membership = Membership.objects.get(user=alice)
    client.force_login(root)
    response = client.post(
        f"/admin/accounts/team/{team.pk}/change/",
        {
            "name": team.name,
            "description": "",
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "1",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "memberships-0-id": membership.pk,
            "memberships-0-team": team.pk,
            "memberships-0-user": alice.pk,
            "memberships-0-role": "approver",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    membership.refresh_from_db()
    assert membership.role == "approver"
    event = AuditEvent.objects.get(action="membership.set")
    assert (event.before, event.after, event.actor_username) == ({"role": "member"}, {"role": "approver"}, "root")


@pytest.mark.django_db
def test_making_someone_staff_is_audited(client, root, alice):
    client.force_login(root)
    client.post(
        f"/admin/accounts/user/{alice.pk}/change/",
        {
            "username": "alice",
            "email": "alice@example.org",
            "is_active": "on",
            "is_staff": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
        },
    )
    alice.refresh_from_db()
    assert alice.is_staff
    event = AuditEvent.objects.get(action="user.updated")
    assert event.before["is_staff"] is False and event.after["is_staff"] is True
