"""LDAP sign-in and the periodic sync against a real slapd (tests/identity/servers.py)."""

import pytest
from django.urls import reverse

from apps.accounts.models import Membership, User
from apps.audit.models import AuditEvent
from apps.clusters.models import ClusterGrant
from apps.identity.sync import ldap_sync
from tests.factories import ClusterGrantFactory, UserFactory

pytestmark = [pytest.mark.django_db]


def _login(client, username, password):
    return client.post(reverse("login"), {"username": username, "password": password})


def _roles(user) -> dict[str, str]:
    return dict(Membership.objects.filter(user=user).values_list("team__name", "role"))


def test_a_directory_user_signs_in_and_gets_teams_from_groups(client, ldap_settings, ldap_directory):
    ldap_directory.add_person("lena", "lena-pw-1")
    ldap_directory.set_groups("lena", ["vision-approvers", "physics-members"])
    response = _login(client, "lena", "lena-pw-1")
    assert response.status_code == 302 and response.url == reverse("home")
    lena = User.objects.get(username="lena")
    assert (lena.directory, lena.directory_uid, lena.email) == ("ldap", "lena", "lena@example.org")
    assert not lena.has_usable_password()
    assert _roles(lena) == {"vision": "approver", "physics": "member"}
    event = AuditEvent.objects.filter(action="user.directory_roles", subject_id=str(lena.uuid)).get()
    assert event.after["roles"] == {"physics": "member", "vision": "approver"} and event.after["source"] == "ldap"
    assert AuditEvent.objects.filter(action="user.logged_in", subject_id=str(lena.uuid)).exists()

    # The directory takes the approver group away: the next sign-in moves the role, audited.
    ldap_directory.set_groups("lena", ["vision-members"])
    client.logout()
    assert _login(client, "lena", "lena-pw-1").status_code == 302
    assert _roles(lena) == {"vision": "member"}
    last = AuditEvent.objects.filter(action="user.directory_roles", subject_id=str(lena.uuid)).order_by("-seq").first()
    assert last.before["roles"] == {"physics": "member", "vision": "approver"}
    assert last.after["roles"] == {"physics": None, "vision": "member"}


def test_a_wrong_directory_password_is_refused_and_audited(client, ldap_settings, ldap_directory):
    ldap_directory.add_person("omar", "omar-pw-1")
    response = _login(client, "omar", "not-his")
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
    assert not User.objects.filter(username="omar").exists()
    assert AuditEvent.objects.filter(action="user.login_failed", subject_text="omar").exists()


def test_the_sync_suspends_the_grants_of_someone_the_directory_dropped(client, ldap_settings, ldap_directory):
    ldap_directory.add_person("pia", "pia-pw-1")
    ldap_directory.set_groups("pia", ["vision-members"])
    assert _login(client, "pia", "pia-pw-1").status_code == 302
    pia = User.objects.get(username="pia")
    grant = ClusterGrantFactory(user=pia, cluster_username="pia")
    assert grant.status == ClusterGrant.Status.ACTIVE

    unchanged = ldap_sync()
    assert unchanged.checked == 1 and unchanged.gone == [] and unchanged.changed == {}

    ldap_directory.remove_person("pia")
    result = ldap_sync()
    assert result.gone == ["pia"]
    grant.refresh_from_db()
    assert grant.status == ClusterGrant.Status.SUSPENDED
    assert _roles(pia) == {}
    suspended = AuditEvent.objects.get(action="grant.suspended", subject_id=str(grant.uuid))
    assert "no longer in the LDAP directory" in str(suspended.after)


def test_the_sync_moves_roles_of_people_who_do_not_sign_in(client, ldap_settings, ldap_directory):
    ldap_directory.add_person("quinn", "quinn-pw-1")
    ldap_directory.set_groups("quinn", ["vision-approvers"])
    assert _login(client, "quinn", "quinn-pw-1").status_code == 302
    ldap_directory.set_groups("quinn", ["vision-members"])
    result = ldap_sync()
    assert result.changed == {"quinn": {"vision": ("approver", "member")}}
    assert _roles(User.objects.get(username="quinn")) == {"vision": "member"}


def test_a_directory_outage_changes_nothing(client, ldap_settings, ldap_directory, settings):
    ldap_directory.add_person("rhea", "rhea-pw-1")
    ldap_directory.set_groups("rhea", ["vision-members"])
    assert _login(client, "rhea", "rhea-pw-1").status_code == 302
    rhea = User.objects.get(username="rhea")
    grant = ClusterGrantFactory(user=rhea, cluster_username="rhea")
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.1:1"  # nothing listens there
    import ldap

    with pytest.raises(ldap.LDAPError):
        ldap_sync()
    grant.refresh_from_db()
    assert grant.status == ClusterGrant.Status.ACTIVE and _roles(rhea) == {"vision": "member"}


def test_local_passwords_can_be_kept_for_break_glass_admins_only(client, settings, password):
    UserFactory(username="alice")
    UserFactory(username="root", is_staff=True, is_superuser=True)
    settings.AXLE_LOCAL_PASSWORDS = "break-glass"
    settings.AXLE_BREAK_GLASS_USERS = ["root"]
    assert _login(client, "alice", password).status_code == 200  # refused: the form again
    assert _login(client, "root", password).status_code == 302


def test_the_directory_uid_is_the_default_cluster_username_of_a_new_grant(client, ldap_settings, ldap_directory):
    from apps.clusters.forms import ClusterGrantAdminForm
    from tests.factories import ClusterFactory

    ldap_directory.add_person("tara", "tara-pw-1")
    assert _login(client, "tara", "tara-pw-1").status_code == 302
    tara = User.objects.get(username="tara")
    cluster = ClusterFactory(name="hpc-ldap")
    form = ClusterGrantAdminForm(data={"user": tara.pk, "cluster": cluster.pk, "cluster_username": ""})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["cluster_username"] == "tara"
    # A local account has no directory uid: the administrator must still name the account.
    other = UserFactory(username="ulla")
    form = ClusterGrantAdminForm(data={"user": other.pk, "cluster": cluster.pk, "cluster_username": ""})
    assert not form.is_valid() and "cluster_username" in form.errors
