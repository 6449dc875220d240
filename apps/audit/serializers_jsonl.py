"""The JSON Lines twin of apps/audit/serializers_json.py: datetimes kept to the microsecond."""

from django.core.serializers import jsonl as django_jsonl

from .serializers_json import _exact


class Serializer(django_jsonl.Serializer):
    def _init_options(self):
        super()._init_options()
        _exact(self.json_kwargs)


Deserializer = django_jsonl.Deserializer
