"""What ccportal keeps and for how long: job files, the call log, rollups, worker rows."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from integrations.models import ApiCall, BulkJob, DailyUsage, HourlyUsage, JobState, SyncMode
from integrations.services import housekeeping
from integrations.services.bulk_files import JobFiles, job_folders
from integrations.services.housekeeping import (
    calls_prune,
    housekeeping_run,
    job_files_expire,
    rollups_prune,
)
from integrations.tasks import HOUSEKEEPING_BACKLOG_EVERY, housekeeping_task
from tests.factories import ApiKeyFactory, ConnectedAccountFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def job(state=JobState.COMPLETED, *, ended: dt.datetime | None = NOW) -> BulkJob:
    account = ConnectedAccountFactory()
    made = BulkJob.objects.create(
        account=account, list_id="list-1", mode=SyncMode.REPLACE, state=state, finished_at=ended
    )
    files = JobFiles(made.pk)
    files.write_text(files.diff, "{}")
    return made


# --- permissions ------------------------------------------------------------------------------
def test_job_files_are_private_whatever_the_umask():
    previous = os.umask(0)  # the loosest a process could run with
    try:
        files = JobFiles(4242)
        files.store_upload([b"email\nann@example.com\n"])
        files.write_text(files.diff, "{}")
    finally:
        os.umask(previous)

    assert mode(files.folder) == 0o700
    assert mode(files.folder.parent) == 0o700
    assert mode(files.desired) == 0o600
    assert mode(files.diff) == 0o600


def test_a_folder_made_loose_earlier_is_tightened_on_the_next_write(media):
    folder = media / "bulk" / "job-7"
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    loose = folder / "diff.json"
    loose.write_text("{}")
    loose.chmod(0o644)

    files = JobFiles(7)
    files.write_text(files.diff, '{"adds": []}')

    assert mode(folder) == 0o700
    assert mode(files.diff) == 0o600


# --- job files --------------------------------------------------------------------------------
def test_files_go_days_after_the_job_ended_and_no_sooner(settings):
    settings.CC_BULK_FILES_DAYS = 7
    old = job(ended=NOW - dt.timedelta(days=8))
    recent = job(ended=NOW - dt.timedelta(days=6))

    assert job_files_expire(now=NOW) == 1

    assert not JobFiles(old.pk).present
    assert JobFiles(recent.pk).present


def test_a_job_still_moving_keeps_its_files_however_old(settings):
    settings.CC_BULK_FILES_DAYS = 1
    paused = job(JobState.PAUSED, ended=None)
    BulkJob.objects.filter(pk=paused.pk).update(updated_at=NOW - dt.timedelta(days=30))

    assert job_files_expire(now=NOW) == 0
    assert JobFiles(paused.pk).present


def test_the_retention_follows_the_setting(settings):
    settings.CC_BULK_FILES_DAYS = 30
    kept = job(ended=NOW - dt.timedelta(days=8))

    assert job_files_expire(now=NOW) == 0
    assert JobFiles(kept.pk).present


def test_a_cancelled_job_without_an_end_time_goes_by_its_last_change(settings):
    settings.CC_BULK_FILES_DAYS = 7
    cancelled = job(JobState.CANCELLED, ended=None)
    BulkJob.objects.filter(pk=cancelled.pk).update(updated_at=NOW - dt.timedelta(days=8))

    assert job_files_expire(now=NOW) == 1


def test_a_folder_whose_job_is_gone_goes_once_it_is_old_enough(settings):
    settings.CC_BULK_FILES_DAYS = 7
    orphan_old, orphan_new = JobFiles(9001), JobFiles(9002)
    for files in (orphan_old, orphan_new):
        files.write_text(files.diff, "{}")
    stamp = (NOW - dt.timedelta(days=8)).timestamp()
    os.utime(orphan_old.folder, (stamp, stamp))
    young = (NOW - dt.timedelta(hours=1)).timestamp()
    os.utime(orphan_new.folder, (young, young))

    assert job_files_expire(now=NOW) == 1
    assert job_folders() == [9002]


# --- the call log and rollups -----------------------------------------------------------------
def calls(key, account, *, days_ago: float, count: int) -> None:
    at = NOW - dt.timedelta(days=days_ago)
    ApiCall.objects.bulk_create(
        ApiCall(
            api_key=key,
            account=account,
            method="GET",
            path_template="/v3/contact_lists",
            status_code=200,
            created_at=at,
        )
        for _ in range(count)
    )


def test_calls_older_than_the_setting_are_pruned_and_newer_kept(settings):
    settings.CC_CALL_LOG_DAYS = 30
    account = ConnectedAccountFactory()
    calls(account.api_key, account, days_ago=31, count=3)
    calls(account.api_key, account, days_ago=29, count=2)

    report = housekeeping_run(now=NOW)

    assert report.calls_pruned == 3 and not report.calls_remaining
    assert ApiCall.objects.count() == 2


def test_pruning_is_bounded_and_says_when_more_remain(monkeypatch):
    monkeypatch.setattr(housekeeping, "PRUNE_BATCH", 2)
    monkeypatch.setattr(housekeeping, "PRUNE_MAX_BATCHES", 2)
    account = ConnectedAccountFactory()
    calls(account.api_key, account, days_ago=40, count=5)

    assert calls_prune(before=NOW - dt.timedelta(days=30)) == (4, True)
    assert calls_prune(before=NOW - dt.timedelta(days=30)) == (1, False)
    assert ApiCall.objects.count() == 0


def test_rollups_stay_400_days():
    key = ApiKeyFactory()
    for days in (401, 399):
        day = NOW - dt.timedelta(days=days)
        DailyUsage.objects.create(api_key=key, date=day.date(), calls=1)
        HourlyUsage.objects.create(api_key=key, hour=day.replace(minute=0), calls=1)

    assert rollups_prune(before=NOW - dt.timedelta(days=400)) == 2
    assert DailyUsage.objects.count() == HourlyUsage.objects.count() == 1


def test_the_task_comes_back_soon_while_old_calls_remain(monkeypatch):
    monkeypatch.setattr(housekeeping, "PRUNE_BATCH", 1)
    monkeypatch.setattr(housekeeping, "PRUNE_MAX_BATCHES", 1)
    account = ConnectedAccountFactory()
    calls(account.api_key, account, days_ago=400, count=2)
    ApiCall.objects.update(created_at=timezone.now() - dt.timedelta(days=400))

    housekeeping_task.call()

    queued = DBTaskResult.objects.get(task_path=housekeeping_task.module_path)
    assert queued.run_after <= timezone.now() + HOUSEKEEPING_BACKLOG_EVERY
    assert ApiCall.objects.count() == 1
