"""gunicorn's settings for ccportal: `gunicorn ccportal.wsgi`, run from the repository root, reads
this file by itself. Each value comes from the environment or `.env` (documented in
`.env.example`); an empty value means the default."""

from __future__ import annotations

import os
from pathlib import Path

import environ

# gunicorn reads this file before Django starts, so `.env` is read here too (never overriding
# the environment, as settings.py does).
environ.Env.read_env(Path(__file__).resolve().parent / ".env", overwrite=False)


def _setting(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


wsgi_app = "ccportal.wsgi"
proc_name = "ccportal"

# Threads, not processes, carry concurrency: a proxied call sleeps until its rate-limit slot
# (up to CC_PROXY_MAX_WAIT_BACKGROUND seconds), and a sleeping thread costs little memory.
# Each thread may hold a database connection (CONN_MAX_AGE is 60 s when DEBUG is off), so
# workers x threads per host must fit the database's connection limit.
worker_class = "gthread"
workers = int(_setting("GUNICORN_WORKERS", "2"))
threads = int(_setting("GUNICORN_THREADS", "32"))

# A platform that sets PORT routes to it from outside, hence all interfaces (gunicorn's own
# convention); otherwise loopback, for a reverse proxy on the same host.
_port = _setting("PORT", "")
bind = _setting("GUNICORN_BIND", f"0.0.0.0:{_port}" if _port else "127.0.0.1:8000")

# With gthread this watches each worker's own loop, not its requests (they run in threads), so
# a caller waiting for its slot is never cut by it; a worker stuck this long is replaced.
timeout = int(_setting("GUNICORN_TIMEOUT", "120"))
# After SIGTERM, requests in flight get this long to finish before their worker is killed.
graceful_timeout = int(_setting("GUNICORN_GRACEFUL_TIMEOUT", "30"))

# Who may tell gunicorn the request's scheme (X-Forwarded-Proto): the load balancer's
# addresses, comma-separated, or * when only the balancer can reach this port.
forwarded_allow_ips = _setting("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# One line per request on stdout, with its time in milliseconds. The path is logged without its
# query string: the OAuth callback's code and state travel there, and gunicorn's log does not
# pass through the portal's secret-scrubbing filter.
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
