"""The WSGI application gunicorn (and ``runserver``) serves: two doors onto one Django project.

Pages, the admin and ``/metrics`` go through the whole middleware stack (sessions, CSRF,
login, messages, security headers). The proxy, ``/proxy/…``, does not: every request there
carries a portal token in its ``Authorization`` header and none of that applies to it, and
a proxied call is waited on by an application, so the proxy's door runs the view alone.
The URLconf, the request and response, the database connection handling and the 500 page
are Django's own in both.
"""

import os

from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccportal.settings")

#: Requests whose path starts with this go through :class:`ProxyHandler`.
PROXY_PREFIX = "/proxy/"


class WithoutMiddleware:
    """For a Django handler: the chain ``MIDDLEWARE = []`` would build, so an exception still
    becomes Django's 500 answer. (The tests' client uses it too, to see what gunicorn serves.)"""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response)


class ProxyHandler(WithoutMiddleware, WSGIHandler):
    """Django's WSGI handler for the proxy's door."""


portal = get_wsgi_application()
proxy = ProxyHandler()


def application(environ, start_response):
    door = proxy if environ.get("PATH_INFO", "").startswith(PROXY_PREFIX) else portal
    return door(environ, start_response)
