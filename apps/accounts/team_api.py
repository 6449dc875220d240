"""The API every team-owned asset has (see `apps.accounts.teams`): its list (filtered by
``?team=`` and ``?q=``, paginated), creation in one of the user's teams, and one asset with
its version counts.

An app's list view subclasses `TeamAssetListCreateApi` and names its selector, service and
serializers: its ``get``/``post`` and their schema follow from them. Other views mix
`TeamAssetApi` in and call `asset_list`, `asset_create` and `asset_response` from their own
methods. The list reads its filters through ``filter_serializer`` and pages with the view's
``pagination_class``."""

from __future__ import annotations

from collections.abc import Callable

from django.db.models import Model, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.pagination import Pagination, page_response
from apps.core.schema import errors


class TeamAssetFilterSerializer(serializers.Serializer):
    team = serializers.CharField(required=False, allow_blank=True, help_text="Team name")
    q = serializers.CharField(required=False, allow_blank=True, help_text="Part of the name or description")


class TeamAssetApi:
    # The app's selector and service, called as list_assets(user=, team=, q=) and
    # create_asset(user=, team=, name=, description=); wrap them in staticmethod().
    list_assets: Callable[..., QuerySet]
    create_asset: Callable[..., Model]
    input_serializer: type[serializers.Serializer]  # with a TeamField named team
    output_serializer: type[serializers.Serializer]
    filter_serializer: type[serializers.Serializer] = TeamAssetFilterSerializer
    pagination_class = Pagination

    def asset_list(self, request) -> Response:
        filters = self.filter_serializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        assets = self.list_assets(user=request.user, **filters.validated_data)
        return page_response(self, request, assets, self.output_serializer)

    def asset_create(self, request) -> Response:
        data = self.input_serializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        asset = self.create_asset(user=request.user, **data.validated_data)
        return self.asset_response(request, asset, status=201)

    def with_counts(self, request, asset: Model) -> Model:
        """``asset`` read again as the list gives it, with ``version_count`` and ``latest_number``."""
        return self.list_assets(user=request.user).get(pk=asset.pk)

    def asset_response(self, request, asset: Model, *, status: int = 200) -> Response:
        return Response(self.output_serializer(self.with_counts(request, asset)).data, status=status)


# GET: the assets of the user's teams (?team=, ?q=), paginated; POST: a new one. No docstring,
# since the schema would give it to every subclass as its description.
class TeamAssetListCreateApi(TeamAssetApi, APIView):
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        extend_schema_view(
            get=extend_schema(
                parameters=[cls.filter_serializer],
                responses={200: cls.output_serializer(many=True), **errors(400)},
            ),
            post=extend_schema(
                request=cls.input_serializer, responses={201: cls.output_serializer, **errors(404, 409)}
            ),
        )(cls)

    def get(self, request):
        return self.asset_list(request)

    def post(self, request):
        return self.asset_create(request)
