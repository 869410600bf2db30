"""Files only the portal's own user may read: folders 0700, files 0600.

Job files hold people's addresses; whatever the process umask, they are created private.
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` that creates the file 0600 (and makes it so if an
    older file was looser)."""
    descriptor = os.open(path, flags, FILE_MODE)
    os.fchmod(descriptor, FILE_MODE)
    return descriptor


def private_folder(folder: Path) -> Path:
    """Create ``folder`` (and its missing parents) 0700, and make it so if it was looser."""
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    folder.chmod(FOLDER_MODE)
    return folder
