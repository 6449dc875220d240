"""Django's password forms, saving through the services so each change is audited."""

from django.contrib.auth import forms as auth_forms

from apps.core import context

from . import services
from .models import User


def _actor():
    ctx = context.current()
    return User.objects.filter(pk=ctx.actor_id).first() if ctx.actor_id else None


class PasswordChangeForm(auth_forms.PasswordChangeForm):
    """A user changing their own password (at /password/change/)."""

    def save(self, commit=True):
        saved = services.user_set_password(user=self.user, password=self.cleaned_data["new_password1"], actor=self.user)
        # The view keeps the session alive with the hash on self.user: give it the new one.
        self.user.password = saved.password
        return self.user


class AdminPasswordChangeForm(auth_forms.AdminPasswordChangeForm):
    """An administrator setting (or disabling) someone's password in the admin."""

    def save(self, commit=True):
        usable = self.cleaned_data.get("set_usable_password", True)
        password = self.cleaned_data["password1"] if usable else None
        saved = services.user_set_password(user=self.user, password=password, actor=_actor())
        self.user.password = saved.password
        return self.user
