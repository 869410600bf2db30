"""Logging helpers the ``LOGGING`` setting refers to."""

from __future__ import annotations

import logging


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
