from django.apps import AppConfig


class HubConfig(AppConfig):
    """Commands that act on the whole hub (schedules, secret rotation). They discover what
    each app offers (``schedules.SCHEDULES``, ``secrets.rotate``) by name, so this app sits
    above all the others and nothing imports it."""

    name = "apps.hub"
    label = "hub"
