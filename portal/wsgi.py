import os

from django.core.wsgi import get_wsgi_application

# A server started without DJANGO_SETTINGS_MODULE is a deployment: production settings, which
# refuse to start without a real secret key. The local settings would invent their own keys
# and quietly run a hub whose secrets nobody set (`./dev` exports portal.settings.local).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.production")
application = get_wsgi_application()
