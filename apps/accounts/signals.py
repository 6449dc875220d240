"""Audit Django's own authentication events. Django emits these as signals; listening is the
only way to see them, and the audit write is the whole of the handler."""

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from apps.audit.services import audit_record

from .middleware import session_mark_seen


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    audit_record(action="user.logged_in", subject=user, actor=user)
    if request is not None and hasattr(request, "session"):
        # Start the idle clock with the session, so the first page does not write it again.
        session_mark_seen(request.session)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        audit_record(action="user.logged_out", subject=user, actor=user)


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    # ``credentials`` has the password scrubbed by Django; keep only the username tried.
    username = str(credentials.get("username", ""))[:150]
    audit_record(
        action="user.login_failed", subject_type="accounts.user", subject_text=username, after={"username": username}
    )


@receiver(user_locked_out)
def _locked_out(sender, request, username, ip_address, **kwargs):
    # django-axes sends this when a username or an address reaches the failure limit, and again
    # for each attempt while it stays locked out.
    username = str(username or "")[:150]
    audit_record(
        action="user.locked_out",
        subject_type="accounts.user",
        subject_text=username,
        after={"username": username, "ip_address": ip_address},
    )
