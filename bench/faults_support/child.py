"""Client processes of the fault suite: each command is one real OS process.

    python bench/faults_support/child.py token ACCOUNT_ID [--force]
    python bench/faults_support/child.py refresh-loop ACCOUNT_ID --seconds S
    python bench/faults_support/child.py sqlite-lock DB_PATH --seconds S --times N --gap G
    python bench/faults_support/child.py check-secrets ACCOUNT_ID...

The portal's settings come from the environment the suite passes. Each prints one JSON line
(``sqlite-lock`` one line per lock it took) and never a secret.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _django() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    import django

    django.setup()


def _say(**values) -> None:
    print(json.dumps(values), flush=True)


def token(account_id: int, *, force: bool) -> int:
    """Ask for the account's access token once (forcing a refresh with ``--force``)."""
    _django()
    from integrations.models import ConnectedAccount
    from integrations.services.tokens import access_token

    account = ConnectedAccount.objects.select_related("api_key").get(pk=account_id)
    try:
        access_token(account=account, stale_version=account.token_version if force else None)
    except Exception as exc:
        _say(ok=False, error=f"{type(exc).__name__}: {exc}")
        return 1
    _say(ok=True)
    return 0


def refresh_loop(account_id: int, *, seconds: float) -> int:
    """Force a refresh about every 1.2 s for ``seconds``, and call CC with each token."""
    _django()
    from integrations.models import ConnectedAccount
    from integrations.services.gateway import cc_client
    from integrations.services.tokens import access_token

    deadline = time.monotonic() + seconds
    refreshed, errors = 0, []
    while time.monotonic() < deadline:
        account = ConnectedAccount.objects.select_related("api_key").get(pk=account_id)
        try:
            access_token(account=account, stale_version=account.token_version)
            cc_client(account=account).contact_lists()
            refreshed += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(1.2)
    _say(refreshed=refreshed, errors=errors[:5])
    return 0


def sqlite_lock(path: str, *, seconds: float, times: int, gap: float) -> int:
    """Hold an exclusive write lock on the database ``times`` times, ``seconds`` each."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=60)
    for n in range(times):
        connection.execute("BEGIN EXCLUSIVE")
        _say(locked=n + 1)
        time.sleep(seconds)
        connection.execute("COMMIT")
        _say(released=n + 1)
        time.sleep(gap)
    connection.close()
    return 0


def check_secrets(account_ids: list[int]) -> int:
    """Count stored secrets no configured key opens, then call CC once per account."""
    _django()
    from django.apps import apps

    from integrations import crypto
    from integrations.fields import EncryptedTextField
    from integrations.models import ConnectedAccount
    from integrations.services.gateway import cc_client

    unreadable = []
    for model in apps.get_app_config("integrations").get_models():
        names = [f.name for f in model._meta.fields if isinstance(f, EncryptedTextField)]
        for row in model.objects.all() if names else []:
            unreadable += [
                f"{model._meta.label} #{row.pk} {name}"
                for name in names
                if crypto.is_unreadable(getattr(row, name))
            ]
    calls = []
    for account_id in account_ids:
        account = ConnectedAccount.objects.select_related("api_key").get(pk=account_id)
        try:
            cc_client(account=account).contact_lists()
            calls.append("ok")
        except Exception as exc:
            calls.append(f"{type(exc).__name__}: {exc}")
    _say(unreadable=unreadable, calls=calls)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("token")
    one.add_argument("account_id", type=int)
    one.add_argument("--force", action="store_true")
    loop = sub.add_parser("refresh-loop")
    loop.add_argument("account_id", type=int)
    loop.add_argument("--seconds", type=float, required=True)
    lock = sub.add_parser("sqlite-lock")
    lock.add_argument("path")
    lock.add_argument("--seconds", type=float, required=True)
    lock.add_argument("--times", type=int, default=1)
    lock.add_argument("--gap", type=float, default=1.0)
    check = sub.add_parser("check-secrets")
    check.add_argument("account_ids", type=int, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "token":
        return token(args.account_id, force=args.force)
    if args.command == "refresh-loop":
        return refresh_loop(args.account_id, seconds=args.seconds)
    if args.command == "sqlite-lock":
        return sqlite_lock(args.path, seconds=args.seconds, times=args.times, gap=args.gap)
    return check_secrets(args.account_ids)


if __name__ == "__main__":
    sys.exit(main())
