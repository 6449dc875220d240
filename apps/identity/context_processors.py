from django.conf import settings


def sso(request):
    return {
        "sso_oidc_name": settings.AXLE_OIDC_NAME if settings.AXLE_OIDC_ISSUER else "",
        "sso_ldap": bool(settings.AXLE_LDAP_URI),
        "sso_local_passwords": settings.AXLE_LOCAL_PASSWORDS != "break-glass",
    }
