from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Demo data for `./dev up` (`seed_demo`, `seed_example`, `seed_serving`). It uses every
    app's services, so it sits at the top and nothing imports it."""

    name = "apps.demo"
    label = "demo"
