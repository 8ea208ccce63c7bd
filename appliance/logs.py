"""Log lines fit for a service: one line per event, on standard error, as text or JSON.

`configure(level, fmt)` is called once by every `appliance` command that builds the app.

- Every record is one line. A message or a traceback with line breaks has them written
  as `\\n` in text (JSON escapes them anyway), so the journal, `grep` and log shippers
  never see half an event.
- `LOG_FORMAT=text`: `2025-03-01 12:00:00,123 WARNING appliance: message`. When standard
  error is the systemd journal (systemd sets JOURNAL_STREAM to its device and inode) the
  time is left out, since the journal stamps each line itself, and each line starts with
  its syslog priority (`<4>` for a warning, sd-daemon(3)), so `journalctl -p warning`
  filters by level.
- `LOG_FORMAT=json`: `{"time": "...Z", "level": "warning", "logger": "appliance",
  "message": "..."}`, plus `"exception"` with the traceback when there is one; also
  prefixed with the priority when it goes to the journal (which strips it).
- APScheduler logs two INFO lines per run of each job ("Running job", "executed
  successfully"); with a job every 5 s that is noise at rest, so its loggers start at
  WARNING. A task that fails is logged by the appliance itself. So does peewee's
  migration runner, whose "up: NAME" says again what `appliance.db` logs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import TextIO

QUIET_LOGGERS = ("apscheduler", "peewee.migrations")
# logging's levels -> syslog priorities (sd-daemon(3) line prefixes)
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
              logging.DEBUG: 7}


def writes_to_journal(stream: TextIO) -> bool:
    """Whether `stream` is the journal's stream socket systemd connected us to."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


def priority(levelno: int) -> int:
    for level in sorted(PRIORITIES, reverse=True):
        if levelno >= level:
            return PRIORITIES[level]
    return PRIORITIES[logging.DEBUG]


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message` on one line (`<priority>logger: message` for the
    journal)."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__("%(name)s: %(message)s" if journal
                         else "%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record).replace("\r", "").replace("\n", "\\n")
        return f"<{priority(record.levelno)}>{line}" if self.journal else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message[, exception]."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(entry, ensure_ascii=False, default=str)
        return f"<{priority(record.levelno)}>{line}" if self.journal else line


def formatter(fmt: str, stream: TextIO) -> logging.Formatter:
    journal = writes_to_journal(stream)
    return JsonFormatter(journal) if fmt == "json" else TextFormatter(journal)


def configure(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record at `level` or above to `stream` (standard error), one line
    each, in `fmt` ("text" or "json"); replaces handlers set up before."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt, stream))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
