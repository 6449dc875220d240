from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from apps.core import context
from apps.core.schema import errors

from . import selectors, services


class TokenObtainThrottle(AnonRateThrottle):
    rate = "30/min"


class TokenObtainApi(APIView):
    """Exchange a username and password for a new personal API token."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [TokenObtainThrottle]

    class TokenObtainInputSerializer(serializers.Serializer):
        username = serializers.CharField()
        password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)
        name = serializers.CharField(required=False, default="API token", max_length=100)

    class TokenOutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        id = serializers.UUIDField()
        name = serializers.CharField()

    @extend_schema(request=TokenObtainInputSerializer, responses={201: TokenOutputSerializer, **errors(401)}, auth=[])
    def post(self, request):
        data = self.TokenObtainInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        # The Django request, not DRF's wrapper: django-axes marks a lockout on it, and its
        # middleware then answers 429 instead of this view.
        user = authenticate(
            request._request, username=data.validated_data["username"], password=data.validated_data["password"]
        )
        if user is None:
            # Well-formed but wrong credentials are a 401, as for a wrong token, not a malformed request.
            return Response(
                {"detail": "Unable to log in with that username and password."},
                status=401,
                headers={"WWW-Authenticate": "Token"},
            )
        context.set_actor(user.pk)
        token, key = services.token_create(user=user, name=data.validated_data["name"])
        return Response({"token": key, "id": token.uuid, "name": token.name}, status=201)


class MeApi(APIView):
    class MeOutputSerializer(serializers.Serializer):
        id = serializers.UUIDField(source="uuid")
        username = serializers.CharField()
        email = serializers.EmailField()
        is_admin = serializers.BooleanField(source="is_platform_admin")
        teams = serializers.SerializerMethodField()

        def get_teams(self, user) -> list[dict]:
            return [{"team": m.team.name, "role": m.role} for m in selectors.membership_list(user=user)]

    @extend_schema(responses=MeOutputSerializer)
    def get(self, request):
        return Response(self.MeOutputSerializer(request.user).data)
