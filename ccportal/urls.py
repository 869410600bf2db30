from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from integrations.views.auth import AdminLoginView, RateLimitedLoginView
from integrations.views.metrics import metrics
from integrations.views.proxy import proxy

urlpatterns = [
    # The admin's login is the portal's: one page, one set of limits (before admin.site.urls,
    # which would otherwise answer /admin/login/ with its own, unlimited form).
    path("admin/login/", AdminLoginView.as_view(), name="admin_login"),
    path("admin/", admin.site.urls),
    path("login/", RateLimitedLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("metrics", metrics, name="metrics"),
    path("proxy/v3/<path:path>", proxy, name="proxy"),
    path("favicon.ico", RedirectView.as_view(url=static("ccportal/favicon.svg"), permanent=True)),
    path("", include("integrations.urls")),
]

# Every PermissionDenied (a page's refusal names what the login may not do) renders
# templates/403.html with the message.
handler403 = "django.views.defaults.permission_denied"
