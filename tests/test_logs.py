"""Log lines fit for a service: one line per event, text or JSON, the journal's priority
prefix, and a scheduler that is quiet at rest."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import sys
import time

import pytest

from appliance import logs
from tests.conftest import Server


def record_with_traceback(name: str = "appliance.test") -> logging.LogRecord:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        return logging.getLogger(name).makeRecord(
            name, logging.ERROR, __file__, 1, "task %s failed\nbadly", ("x",),
            sys.exc_info())


def test_a_traceback_stays_on_one_line_in_text():
    line = logs.TextFormatter().format(record_with_traceback())
    assert "\n" not in line
    assert " ERROR appliance.test: task x failed\\nbadly\\nTraceback" in line
    assert "ValueError: boom\\nsecond line" in line


def test_json_lines_carry_the_traceback_as_a_field():
    line = logs.JsonFormatter().format(record_with_traceback())
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["logger"] == "appliance.test"
    assert entry["message"] == "task x failed\nbadly"
    assert entry["exception"].startswith("Traceback") and "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("Z")


def test_lines_to_the_journal_start_with_their_priority_and_leave_the_time_out(
        tmp_path, monkeypatch):
    with (tmp_path / "journal").open("w") as stream:
        stat = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        assert logs.writes_to_journal(stream)
        warning = logging.LogRecord("appliance", logging.WARNING, __file__, 1, "low disk",
                                    (), None)
        assert logs.formatter("text", stream).format(warning) == "<4>appliance: low disk"
        assert logs.formatter("json", stream).format(record_with_traceback()).startswith("<3>{")
    assert not logs.writes_to_journal(io.StringIO())
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    with (tmp_path / "other").open("w") as stream:
        assert not logs.writes_to_journal(stream)


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("apscheduler").level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logging.getLogger("apscheduler").setLevel(saved[2])


def test_apscheduler_says_only_what_goes_wrong(restored_logging):
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    logging.getLogger("apscheduler.executors.default").info('Running job "x"')
    logging.getLogger("apscheduler.scheduler").warning("missed a run")
    logging.getLogger("appliance").info("listening")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["logger"], e["message"]) for e in lines] == [
        ("apscheduler.scheduler", "missed a run"), ("appliance", "listening")]


@pytest.mark.slow
def test_serve_logs_json_lines_and_is_quiet_at_rest(tmp_path):
    server = Server([sys.executable, "-m", "appliance"], tmp_path,
                    {"APPLIANCE_LOG_FORMAT": "json", "APPLIANCE_DATA_DIR": str(tmp_path / "d")})
    try:
        server.wait()
        ready = dt.datetime.now(dt.UTC)
        time.sleep(6.5)  # past the 5 s sweep for due jobs, twice the 3 s of start-up tasks
    finally:
        stopping = dt.datetime.now(dt.UTC)
        output = server.stop()
    entries = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    messages = [entry["message"] for entry in entries]
    assert not [e for e in entries if e["logger"].startswith(("apscheduler", "peewee"))]
    assert sum("/setup?token=" in message for message in messages) == 1
    assert sum("listening on" in message for message in messages) == 1
    assert sum("applied migration 0001_initial" in message for message in messages) == 1
    at_rest = [e for e in entries
               if ready + dt.timedelta(seconds=3) < dt.datetime.fromisoformat(e["time"])
               < stopping]
    assert at_rest == []
