"""The pages every team-owned asset has (see `apps.accounts.teams`): its list with a name
filter and a "New …" form, rendered on one layout, ``teams/asset_list.html``.

An app subclasses `TeamAssetListView` with its selector, its create service and its URLs;
its template extends the layout and fills in its own words."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib import messages
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from apps.core.errors import ApplicationError, NotFound

from .models import Team
from .teams import team_choices, team_initial, team_pick

T = TypeVar("T")


def found_or_404(read: Callable[..., T], missing: str, **kwargs: Any) -> T:
    """What a selector finds, or a 404 page saying ``missing``."""
    try:
        return read(**kwargs)
    except NotFound:
        raise Http404(missing) from None


class TeamAssetListView(View):
    """The list of a team-owned asset, with a name filter and a form creating one in a team."""

    template_name: str
    noun: str  # "dataset"
    plural: str  # "datasets"
    # The app's selector and service, called as list_assets(user=, q=) and
    # create_asset(user=, team=, name=, description=); wrap them in staticmethod().
    list_assets: Callable[..., QuerySet]
    create_asset: Callable[..., Model]

    def asset_url(self, asset) -> str:
        raise NotImplementedError

    def version_url(self, asset, number: int) -> str:
        raise NotImplementedError

    def decorate(self, request: HttpRequest, assets: list) -> list:
        """Add what an app's own columns show (its template's extra_th/extra_td blocks)."""
        return assets

    def created_message(self, asset, team: Team) -> str:
        return f"“{asset.name}” in {team.name} created."

    def get(self, request: HttpRequest) -> HttpResponse:
        teams = list(team_choices(user=request.user))
        return self.page(request, teams, {"team": team_initial(teams), "name": "", "description": ""}, [])

    def post(self, request: HttpRequest) -> HttpResponse:
        teams = list(team_choices(user=request.user))
        form = {k: request.POST.get(k, "").strip() for k in ("team", "name", "description")}
        try:
            team = team_pick(teams=teams, name=form["team"])
            asset = self.create_asset(user=request.user, team=team, name=form["name"], description=form["description"])
        except ApplicationError as exc:
            return self.page(request, teams, form, [exc.message])
        messages.success(request, self.created_message(asset, team))
        return redirect(self.asset_url(asset))

    def page(self, request: HttpRequest, teams: list[Team], form: dict, errors: list[str]) -> HttpResponse:
        q = request.GET.get("q", "")
        assets = self.decorate(request, list(self.list_assets(user=request.user, q=q)))
        rows = [(a, self.asset_url(a), self.version_url(a, a.latest_number) if a.latest_number else "") for a in assets]
        context = {
            "rows": rows,
            "noun": self.noun,
            "plural": self.plural,
            "teams": teams,
            "form": form,
            "errors": errors,
            "q": q,
        }
        return render(request, self.template_name, context, status=400 if errors else 200)
