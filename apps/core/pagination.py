from rest_framework.pagination import LimitOffsetPagination

from .errors import ValidationFailed

# PostgreSQL's OFFSET is a bigint; anything near it is a mistake, not a page.
MAX_OFFSET = 2**31 - 1


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=` pages of at most `max_limit` items. A limit or offset that is not a whole
    number in range is refused (400) rather than silently replaced by the default, so a client's
    mistake shows instead of returning the wrong page."""

    max_limit = 1000

    def get_limit(self, request):
        return self._whole(request, self.limit_query_param, 1, self.max_limit, self.default_limit)

    def get_offset(self, request):
        return self._whole(request, self.offset_query_param, 0, MAX_OFFSET, 0)

    @staticmethod
    def _whole(request, name: str, minimum: int, maximum: int, default: int | None) -> int | None:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        if not raw.isascii() or not raw.isdigit() or not minimum <= int(raw) <= maximum:
            raise ValidationFailed(f"{name} must be a whole number from {minimum} to {maximum}.")
        return int(raw)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: (1, self.max_limit), self.offset_query_param: (0, MAX_OFFSET)}
        for parameter in parameters:
            minimum, maximum = bounds[parameter["name"]]
            parameter["schema"].update(minimum=minimum, maximum=maximum)
        return parameters
