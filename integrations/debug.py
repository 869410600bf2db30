"""Error reports that keep secrets out. Django's debug page and error e-mails show the
request's query string, where CC's callback carries the authorization ``code``, and settings
and environment values such as ``REDIS_URL`` and ``DATABASE_URL`` whose names Django does not
recognise as secret although their URLs hold a password."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.http import HttpRequest
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from ccportal.logging import scrub

#: Query parameters of the OAuth callback that must never be shown.
SECRET_QUERY_PARAMETERS = frozenset({"code", "state", "code_verifier", "refresh_token"})
CLEANSED = SafeExceptionReporterFilter.cleansed_substitute


def _cleansed(pairs) -> list[tuple[str, str]]:
    return [(k, CLEANSED if k in SECRET_QUERY_PARAMETERS else v) for k, v in pairs]


def _cleanse_query(query: str) -> str:
    return urlencode(_cleansed(parse_qsl(query, keep_blank_values=True)))


def _secret_values(request) -> list[str]:
    if request is None:
        return []
    return [v for k, v in request.GET.items() if k in SECRET_QUERY_PARAMETERS and v]


class SecretSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Also hides the callback's secrets in frame variables: the request object (whose repr
    holds the full path) and any string holding one of the secret values."""

    def cleanse_setting(self, key, value):
        """Django's cleansing, then any password inside a URL hidden (settings and
        ``request.META``, which holds the environment under runserver)."""
        value = super().cleanse_setting(key, value)
        if isinstance(value, str):
            return scrub(value)
        return value

    def get_traceback_frame_variables(self, request, tb_frame):
        variables = super().get_traceback_frame_variables(request, tb_frame)
        secrets = _secret_values(request)
        cleansed = []
        for name, value in variables:
            if isinstance(value, HttpRequest):
                value = f"<{type(value).__name__}: {value.method} {value.path!r}>"
            elif isinstance(value, str) and any(secret in value for secret in secrets):
                value = self.cleansed_substitute
            cleansed.append((name, value))
        return cleansed


class SecretSafeExceptionReporter(ExceptionReporter):
    """Django's reporter with the callback's secret query parameters replaced by stars in the
    GET table, the ``QUERY_STRING`` and the request URL (locals are hidden where the code
    marks them with ``sensitive_variables``)."""

    def get_traceback_data(self) -> dict:
        data = super().get_traceback_data()
        # Frame variables are printed by now: hide URL passwords and secret parameters in
        # whatever object held them, and in the exception's own message.
        for frame in data.get("frames", []):
            if "vars" in frame:
                frame["vars"] = [(name, scrub(value)) for name, value in frame["vars"]]
        if isinstance(data.get("exception_value"), str):
            data["exception_value"] = scrub(data["exception_value"])
        if self.request is None:
            return data
        data["request_GET_items"] = _cleansed(self.request.GET.items())
        meta = data.get("request_meta")
        if isinstance(meta, dict) and meta.get("QUERY_STRING"):
            meta["QUERY_STRING"] = _cleanse_query(meta["QUERY_STRING"])
        uri = data.get("request_insecure_uri")
        if isinstance(uri, str) and "?" in uri:
            parts = urlsplit(uri)
            data["request_insecure_uri"] = urlunsplit(
                parts._replace(query=_cleanse_query(parts.query))
            )
        return data
