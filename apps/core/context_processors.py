def navigation(request):
    user = getattr(request, "user", None)
    is_admin = bool(user and user.is_authenticated and (user.is_staff or user.is_superuser))
    return {"nav_is_admin": is_admin}
