"""The API every team-owned asset has (see `apps.accounts.teams`): its list (filtered by
``?team=`` and ``?q=``, paginated), creation in one of the user's teams, and one asset with
its version counts.

An app's API view mixes `TeamAssetApi` in, names its selector, service and serializers, and
keeps its own ``get``/``post`` (with their schema) calling `asset_list`, `asset_create` and
`asset_response`. The list reads its filters through ``filter_serializer`` and pages with the
view's ``pagination_class``."""

from __future__ import annotations

from collections.abc import Callable

from django.db.models import Model, QuerySet
from rest_framework import serializers
from rest_framework.response import Response

from apps.core.pagination import Pagination


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
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(assets, request, view=self)
        return paginator.get_paginated_response(self.output_serializer(page, many=True).data)

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
