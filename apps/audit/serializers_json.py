"""Django's JSON serializer (dumpdata/loaddata), keeping datetimes to the microsecond.

Django's own encoder cuts them to milliseconds, so the first audit events (version 1, whose
canonical form has microseconds) would no longer match their hashes after a dumpdata/loaddata
move. Keyed events (version 2) hash milliseconds and survive either way. Registered for the
``json`` and ``jsonl`` formats in SERIALIZATION_MODULES; everything else is Django's."""

import datetime

from django.core.serializers import json as django_json
from django.core.serializers.json import DjangoJSONEncoder


class ExactJSONEncoder(DjangoJSONEncoder):
    def default(self, o):
        if isinstance(o, datetime.datetime):
            return o.isoformat()
        return super().default(o)


def _exact(options: dict) -> None:
    if options.get("cls", DjangoJSONEncoder) is DjangoJSONEncoder:
        options["cls"] = ExactJSONEncoder


class Serializer(django_json.Serializer):
    def _init_options(self):
        super()._init_options()
        _exact(self.json_kwargs)


Deserializer = django_json.Deserializer
