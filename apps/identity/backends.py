"""Local passwords, which a site can turn off for everyone but its break-glass administrators
(AXLE_LOCAL_PASSWORDS=break-glass, AXLE_BREAK_GLASS_USERS) once people sign in through the
directory."""

from django.conf import settings
from django.contrib.auth.backends import ModelBackend


def local_passwords_allowed_for(username: str | None) -> bool:
    if settings.AXLE_LOCAL_PASSWORDS != "break-glass":
        return True
    return bool(username) and username in settings.AXLE_BREAK_GLASS_USERS


class LocalPasswordBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(self._username_field())
        if not local_passwords_allowed_for(username):
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)

    @staticmethod
    def _username_field() -> str:
        from django.contrib.auth import get_user_model

        return get_user_model().USERNAME_FIELD
