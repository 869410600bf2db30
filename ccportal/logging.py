"""Logging helpers the ``LOGGING`` setting refers to."""

from __future__ import annotations

import logging
import re


class LoggerFloor(logging.Filter):
    """Drops records below a level from the named loggers (and their children).

    A logger's own level is not enough for loggers that reset it: ``db_worker`` sets the
    ``django_tasks`` loggers to INFO from its ``--verbosity``, after settings are applied, and
    then every run of a periodic task writes two lines. A filter on the handler holds whatever
    the logger's level; ``--verbosity 0`` would instead also hide failed tasks.
    """

    def __init__(self, floors: dict[str, str | int]) -> None:
        super().__init__()
        levels = logging.getLevelNamesMapping()
        self.floors = {
            name: level if isinstance(level, int) else levels[level.upper()]
            for name, level in floors.items()
        }

    def filter(self, record: logging.LogRecord) -> bool:
        for name, level in self.floors.items():
            if record.name == name or record.name.startswith(f"{name}."):
                return record.levelno >= level
        return True


class QuietBackpressure(logging.Filter):
    """Drops Django's warning for each 429 the proxy answers by itself (a busy key, a spent
    budget; the view marks the request ``proxy_backpressure``).

    Telling an application to come back later is the proxy's everyday work, not an event: a
    client that floods the interactive lane would otherwise write a line per refused call.
    gunicorn's access log still shows every one; other refusals (a bad token, a path outside
    /v3) and a 429 from CC itself are still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(getattr(record, "request", None), "proxy_backpressure", False)


#: Query parameters and form fields whose values are secrets wherever they appear: the PKCE
#: verifier, tokens and client secrets.
SECRET_PARAMETERS = (
    "code_verifier",
    "access_token",
    "refresh_token",
    "client_secret",
    "id_token",
)
#: OAuth's ``code`` and ``state`` are secrets inside a query string or a form body, but the words
#: are common ("state=FAILED" in a worker's log line), so they count only after ``?`` or ``&``
#: or at the start of the text.
QUERY_SECRET_PARAMETERS = ("code", "state")
_SECRET_PARAMETER = re.compile(
    r"(?P<name>\b(?:" + "|".join(SECRET_PARAMETERS) + r")"
    r"|(?:(?<=[?&])|^)(?:" + "|".join(QUERY_SECRET_PARAMETERS) + r"))"
    r"=(?P<value>[^&\s\"'#]+)"
)
#: ``scheme://user:password@host`` — the password part.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s/]+)@")
HIDDEN = "[hidden]"


def scrub(text: str) -> str:
    """``text`` with the values of secret parameters and the passwords in URLs hidden."""
    text = _SECRET_PARAMETER.sub(lambda m: f"{m['name']}={HIDDEN}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{HIDDEN}@", text)


class SecretScrubber(logging.Filter):
    """Rewrites each record so no log line carries an OAuth code, state, verifier, token or a
    password inside a URL — whoever logged it (runserver's request lines and Django's
    "Bad Request: /accounts/callback/?code=…" included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            # Format the traceback now, so what the handler prints is the scrubbed text.
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True
