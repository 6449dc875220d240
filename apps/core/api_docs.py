from django.http import HttpResponse
from drf_spectacular.views import SpectacularSwaggerView


class ApiDocsView(SpectacularSwaggerView):
    """Swagger UI. OPTIONS answers with the allowed methods: the page's HTML renderer has no
    template for DRF's metadata response, which made OPTIONS a 500."""

    def options(self, request, *args, **kwargs):
        response = HttpResponse(content_type="text/plain")
        response["Allow"] = ", ".join(self.allowed_methods)
        return response
