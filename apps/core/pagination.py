import base64
import binascii
import json
from datetime import datetime

from django.core.paginator import Paginator
from django.db import models
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.utils.urls import remove_query_param, replace_query_param

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


class KeysetPagination(Pagination):
    """`Pagination` for a long list ordered newest first (`-created_at`, `-id`), flat in depth.

    - `?cursor=` (the `next` link of every page carries one): the page after a given row,
      read as an index range however deep it is; `count` is null there, since counting
      100,000 rows on every page is what makes deep pages slow.
    - `?offset=` still works: the page's ids are read from the index alone (no row is fetched
      for the rows skipped), then the rows of the page only."""

    cursor_query_param = "cursor"

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.get_limit(request) or self.max_limit
        raw = request.query_params.get(self.cursor_query_param) or None  # `?cursor=`: the first page
        self.keyset = raw is not None
        if self.keyset:
            created_at, pk = self._decode(raw)
            queryset = queryset.filter(created_at__lte=created_at).filter(
                models.Q(created_at__lt=created_at) | models.Q(id__lt=pk)
            )
            rows = list(queryset[: self.limit + 1])
            self.count = None
            self.offset = 0
        else:
            self.offset = self.get_offset(request)
            self.count = self.get_count(queryset)
            ids = ids_slice(queryset, self.offset, self.offset + self.limit + 1, self.count)
            by_pk = {row.pk: row for row in queryset.filter(pk__in=ids).order_by()}
            rows = [by_pk[pk] for pk in ids if pk in by_pk]
        self.has_next = len(rows) > self.limit
        self.page = rows[: self.limit]
        return self.page

    def get_paginated_response(self, data):
        return Response(
            {"count": self.count, "next": self.get_next_link(), "previous": self.get_previous_link(), "results": data}
        )

    def get_paginated_response_schema(self, schema):
        answer = super().get_paginated_response_schema(schema)
        answer["properties"]["count"]["nullable"] = True
        return answer

    def get_next_link(self):
        if not self.has_next or not self.page:
            return None
        last = self.page[-1]
        url = self.request.build_absolute_uri()
        url = remove_query_param(url, self.offset_query_param)
        return replace_query_param(url, self.cursor_query_param, self._encode(last.created_at, last.pk))

    def get_previous_link(self):
        if self.keyset:
            return None
        return super().get_previous_link()

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        parameters.append(
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Where the page starts: the `next` link of the page before carries it.",
                "schema": {"type": "string"},
            }
        )
        return parameters

    @staticmethod
    def _encode(created_at, pk) -> str:
        text = json.dumps([created_at.isoformat(), pk])
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @staticmethod
    def _decode(raw: str):
        try:
            text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
            created_at, pk = json.loads(text)
            moment = datetime.fromisoformat(created_at)
            if not isinstance(pk, int) or moment.tzinfo is None:
                raise ValueError
            return moment, pk
        except (ValueError, TypeError, UnicodeDecodeError, binascii.Error):
            raise ValidationFailed("cursor is not one this list gave out; follow the next link of a page.") from None


# The lists' order, newest first with the id breaking ties: a total order, so reading it
# backwards from the other end gives the same rows.
NEWEST_FIRST = ("-created_at", "-id")


def ids_slice(queryset, start: int, stop: int, count: int) -> list:
    """The primary keys of rows [start, stop) of `queryset`, from the list's index alone.

    A page past the middle is read from the far end of the index (the order reversed, then
    the page's ids put back in order): the rows skipped are then the fewer of the two sides,
    so the deepest page of 100,000 costs what the first one does. Only in the lists' own
    total order; any other order (a sort by metric, by run time) is read from the front."""
    stop = min(stop, count)
    if start >= stop:
        return []
    if count - stop >= start or tuple(queryset.query.order_by) != NEWEST_FIRST:
        return list(queryset.values_list("pk", flat=True)[start:stop])
    ids = list(queryset.reverse().values_list("pk", flat=True)[count - stop : count - start])
    ids.reverse()
    return ids


class IdsFirstPaginator(Paginator):
    """Django's Paginator for deep pages: the page's ids are read first (from the list's
    index alone, from whichever end is nearer: `ids_slice`), then only the page's own rows."""

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        ids = ids_slice(self.object_list, bottom, bottom + self.per_page, self.count)
        by_pk = {row.pk: row for row in self.object_list.filter(pk__in=ids).order_by()}
        return self._get_page([by_pk[pk] for pk in ids if pk in by_pk], number, self)


def page_response(view, request, rows, serializer: type[Serializer], *, context: dict | None = None) -> Response:
    """The page of `rows` the view's `pagination_class` cuts from the request's ?limit=&offset=
    (or ?cursor=), each row through `serializer`, with the paginator's count and links."""
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(rows, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True, context=context or {}).data)
