from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"

    def ready(self):
        from . import signals  # noqa: F401  (audits logins, failed logins and logouts)
