"""The WSGI application gunicorn (and ``runserver``) serves: two doors onto one Django project.

Pages, the admin and ``/metrics`` go through the whole middleware stack. The proxy,
``/proxy/…``, goes through SecurityMiddleware alone (its headers: HSTS, nosniff, referrer
policy): every request there carries a portal token in its ``Authorization`` header, so
sessions, CSRF, login and messages do not apply to it, and a proxied call is waited on by an
application. The URLconf, the request and response, the database connection handling and the
500 page are Django's own in both. What the skipped middleware did that still matters, the
proxy's view does itself: it checks the Host header against ``ALLOWED_HOSTS``, sets
Content-Length on whole answers, and refuses plain HTTP where pages redirect to HTTPS
(``SECURE_REDIRECT_EXEMPT`` keeps the redirect off ``/proxy/``). ``ccportal.asgi`` has one
door, the whole stack, for everything.
"""

import os

from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application
from django.middleware.security import SecurityMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccportal.settings")

#: Requests whose path starts with this go through :class:`ProxyHandler`.
PROXY_PREFIX = "/proxy/"


class ProxyDoor:
    """For a Django handler: the chain ``MIDDLEWARE = [SecurityMiddleware]`` would build, so an
    exception still becomes Django's 500 answer. (The tests' client uses it too, to see what
    gunicorn serves.)"""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        view = convert_exception_to_response(self._get_response)
        self._middleware_chain = convert_exception_to_response(SecurityMiddleware(view))


class ProxyHandler(ProxyDoor, WSGIHandler):
    """Django's WSGI handler for the proxy's door."""


portal = get_wsgi_application()
proxy = ProxyHandler()


def application(environ, start_response):
    door = proxy if environ.get("PATH_INFO", "").startswith(PROXY_PREFIX) else portal
    return door(environ, start_response)
