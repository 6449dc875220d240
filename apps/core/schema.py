"""What the OpenAPI schema says beyond each view's own serializers: the errors an operation can
answer with. The ones every operation of a kind can give are added here, in one place, so a view
added later is documented truthfully without remembering to; a view names the others (409, 503,
a 404 for an entity its body refers to) with `errors(...)` in its `extend_schema`."""

from django.core.validators import RegexValidator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import force_instance, is_serializer
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny

ERRORS = {
    400: "Refused: the body or a parameter is malformed, or breaks a rule; `detail` says why, "
    "or each refused field is a key with its messages.",
    401: "No valid credentials: send `Authorization: Token <key>` (or log in).",
    403: "You may not do this (not your team, not your job, not an approver, or no grant).",
    404: "No such thing, or not one you may see.",
    409: "The thing is not in a state that allows this, or changed under you; `detail` says which.",
    415: "The body is not JSON (or a form).",
    429: "Too many requests; try again after the number of seconds in `Retry-After`.",
    503: "A cluster or MLflow could not be reached; nothing was changed, try again later.",
}


# A character Python's str.strip() keeps (ECMA's \s lacks \x1c-\x1f and \x85, which strip() removes).
NOT_STRIPPED = r"[^\s\u0000\u001c-\u001f\u0085]"
STRIPPED = r"[\s\u001c-\u001f\u0085]"
STRIPPED_TO_NOTHING = "^" + STRIPPED + "*$"


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(required=False, help_text="What is wrong, in a sentence.")


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Responses for `extend_schema(responses={200: X, **errors(409, 503)})`."""
    return {code: OpenApiResponse(ErrorSerializer, description=ERRORS[code]) for code in codes}


class AxleAutoSchema(AutoSchema):
    """Adds the errors implied by how an operation is reached: 401/403 behind a login, 400/415
    with a body, 404 with an id in the path, 429 when throttled."""

    def _implied_error_codes(self) -> list[int]:
        codes = []
        if not any(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            codes += [401, 403]
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            codes += [400, 415]
        if "{" in self.path:
            codes.append(404)
        if self.method == "GET" and self._is_list_view() and self._get_paginator():
            codes.append(400)
        if self.view.get_throttles():
            codes.append(429)
        return codes

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if (
            direction == "request"
            and (type(field) is serializers.CharField or getattr(field, "plain_text", False))
            and schema.get("type") == "string"
            and "pattern" not in schema
            and not any(isinstance(v, RegexValidator) for v in field.validators)
        ):
            # DRF refuses NUL characters and (when it trims) text that is only whitespace, so the
            # schema says so: otherwise "\x00" or "  " would be schema-valid yet refused. A blank
            # value never reaches the pattern (spectacular offers "" as its own choice then).
            if field.trim_whitespace and not field.allow_blank:
                schema["pattern"] = r"^[^\u0000]*" + NOT_STRIPPED + r"[^\u0000]*$"
            else:
                schema["pattern"] = r"^[^\u0000]+$"
        return schema

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        if schema and not required and is_serializer(serializer):
            # A body that is one of several shapes has no required field in common, yet cannot be empty.
            component = self.resolve_serializer(force_instance(serializer), direction)
            required = bool(component and "oneOf" in (component.schema or {}))
        return schema, required

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction == "response":
            for code, response in errors(*self._implied_error_codes()).items():
                if str(code) not in responses:
                    responses[str(code)] = self._get_response_for_code(response, str(code), direction=direction)
        return dict(sorted(responses.items()))
