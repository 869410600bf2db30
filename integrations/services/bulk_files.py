"""A sync job's working files: the one module that knows the job folder's layout.

``MEDIA_ROOT/bulk/job-<id>/`` holds, as the job moves on:

* ``desired.csv`` — the desired membership (the upload, or the source list's export);
* ``export.csv`` / ``source_export.csv`` — CC's exports of the list and of the source list;
* ``diff.json`` — the members to add and to remove, as planned;
* ``rejected_input.csv`` / ``rejected_cc.csv`` — rows the file or CC refused.

Every web server and worker must see the same ``MEDIA_ROOT``. Files a step writes appear whole
or not at all (written beside, then renamed), so a worker killed mid-write leaves nothing half
written for the next one. The files hold people's addresses: folders are 0700 and files 0600,
readable by the portal's own user only, and the housekeeping task deletes them
``CC_BULK_FILES_DAYS`` after the job ends.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from integrations import conf
from integrations.services.bulk_csv import RejectedRow, rejected_rows_csv
from integrations.services.private_files import private_folder, private_opener

#: Who refused a row, and the file that lists the rows it refused.
REJECTED_BY = {"file": "rejected_input.csv", "cc": "rejected_cc.csv"}


def bulk_root() -> Path:
    return conf.media_root() / "bulk"


def job_folders() -> list[int]:
    """The ids of the jobs that have a folder on disk."""
    root = bulk_root()
    if not root.is_dir():
        return []
    ids = []
    for entry in root.iterdir():
        number = entry.name.removeprefix("job-")
        if entry.is_dir() and entry.name.startswith("job-") and number.isdigit():
            ids.append(int(number))
    return sorted(ids)


class JobFiles:
    """The folder of job ``job_id`` and the files in it."""

    def __init__(self, job_id: int) -> None:
        self.folder = bulk_root() / f"job-{job_id}"

    @property
    def desired(self) -> Path:
        return self.folder / "desired.csv"

    @property
    def export(self) -> Path:
        return self.folder / "export.csv"

    @property
    def source_export(self) -> Path:
        return self.folder / "source_export.csv"

    @property
    def diff(self) -> Path:
        return self.folder / "diff.json"

    def rejected(self, by: str) -> Path:
        return self.folder / REJECTED_BY[by]

    # --- writing ---------------------------------------------------------------------------
    def create(self) -> None:
        private_folder(bulk_root())
        private_folder(self.folder)

    def open_private(self, path: Path, mode: str = "w", **kwargs: Any) -> IO[Any]:
        """Open ``path`` for writing as a 0600 file in the job's folder."""
        self.create()
        return open(path, mode, opener=private_opener, **kwargs)

    def modified_at(self) -> dt.datetime:
        """When the folder last changed (a file added or removed)."""
        return dt.datetime.fromtimestamp(self.folder.stat().st_mtime, tz=dt.UTC)

    @property
    def present(self) -> bool:
        """Whether the job's files are still kept (housekeeping removes them in time)."""
        return self.folder.is_dir()

    def store_upload(self, chunks: Iterable[bytes]) -> Path:
        """Copy an upload, chunk by chunk, into ``desired.csv``."""
        with self.open_private(self.desired, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        return self.desired

    def write_text(self, path: Path, text: str) -> None:
        """Write ``text`` to ``path`` whole or not at all."""
        part = path.with_suffix(path.suffix + ".part")
        with self.open_private(part, encoding="utf-8") as handle:
            handle.write(text)
        os.replace(part, path)

    def write_diff(self, *, adds: list[str], removes: list[str], by_id: bool) -> None:
        self.write_text(self.diff, json.dumps({"adds": adds, "removes": removes, "by_id": by_id}))

    def write_rejected(self, by: str, rows: Iterable[RejectedRow]) -> None:
        self.write_text(self.rejected(by), rejected_rows_csv(rows))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- reading ---------------------------------------------------------------------------
    def read_diff(self) -> dict[str, Any]:
        return json.loads(self.diff.read_text(encoding="utf-8"))

    def rejected_rows(self, by: str) -> Iterator[dict[str, str]]:
        """The rows ``by`` ("file" or "cc") refused, as ``line,email,reason`` dicts."""
        path = self.rejected(by)
        if not path.exists():
            return
        with path.open(encoding="utf-8", newline="") as handle:
            yield from csv.DictReader(handle)
