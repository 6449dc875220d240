from django.urls import path

from apps.accounts import api as accounts_api

urlpatterns = [
    path("auth/token/", accounts_api.TokenObtainApi.as_view(), name="api-token-obtain"),
    path("me/", accounts_api.MeApi.as_view(), name="api-me"),
]
