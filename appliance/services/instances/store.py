"""The backup store: the archive files of instance backups, in BACKUP_DIR.

A backup's archive is one file, `<backup id>.<engine>.archive`, written by the engine's
driver (`Driver.export_archive`) through `write`, which hashes and counts it as it goes,
writes `<name>.part` first and renames it when complete (after an fsync), so a file under
its final name is always whole. The store holds no other state: the `backup` rows say
which files should exist, and `files()` lets the start-up check compare the two.

A template's archive (services/instances/templates.py) is `<template id>.<engine>.archive`
in the store's `templates/` folder: a hard link to the backup's archive where the
filesystem allows (archives are never changed in place: a new one replaces the file),
else a copy, made by `copy` the same way `write` makes a file.

The directory is made (0700) on first use, not at start-up, so BACKUP_DIR may be a mount
that comes up after the appliance. An error of the filesystem (full, gone, read-only) is
a `StoreError`, 503 `backup_store_unavailable`, which a job reports as its failure.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from appliance import config
from appliance.drivers.base import Sink
from appliance.errors import ServiceUnavailable

SUFFIX = ".archive"
PART = ".part"
CHUNK = 1 << 20
_NAME = re.compile(r"^bak_[0-9a-z]+\.[a-z]+\.archive$")
_TEMPLATE_NAME = re.compile(r"^tpl_[0-9a-z]+\.[a-z]+\.archive$")
TEMPLATES = "templates"


class StoreError(ServiceUnavailable):
    code = "backup_store_unavailable"


@dataclass(frozen=True)
class Written:
    name: str
    size_bytes: int
    sha256: str


def directory() -> Path:
    """BACKUP_DIR (create_app made it absolute: DATA_DIR/backups when not set)."""
    return Path(config.active()["BACKUP_DIR"])


def name_for(backup_id: str, engine: str) -> str:
    """The archive's name of a backup (`bak_`) or a template (`tpl_`)."""
    return f"{backup_id}.{engine}{SUFFIX}"


def path_of(name: str) -> Path:
    """The file of an archive name the store made (never a path from elsewhere)."""
    if _TEMPLATE_NAME.match(name):
        return directory() / TEMPLATES / name
    if not _NAME.match(name):
        raise ValueError(f"not an archive name of the store: {name!r}")
    return directory() / name


class _Hashing:
    """The file being written, with its sha256 and size taken as the bytes go by."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        try:
            self.handle.write(data)
        except OSError as exc:
            raise StoreError(f"Writing to the backup store failed: {exc.strerror or exc}.",
                             details={"reason": "write"}) from exc
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write(name: str, produce: Callable[[Sink], None]) -> Written:
    """Have `produce(sink)` write the archive `name`; return its size and sha256. The
    file appears under its name only once complete; on any failure nothing of it stays
    (a file of the same name written before is kept until the new one is complete)."""
    target = path_of(name)
    part = target.with_name(target.name + PART)
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = open(part, "wb")
    except OSError as exc:
        raise StoreError(f"The backup store {target.parent} cannot be written: "
                         f"{exc.strerror or exc}.", details={"reason": "open"}) from exc
    try:
        with handle:
            sink = _Hashing(handle)
            produce(sink)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, target)
        _fsync_directory(target.parent)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return Written(name, sink.size, sink.digest.hexdigest())


def checksum(name: str) -> str:
    """The sha256 of the archive as it is now; StoreError when it cannot be read."""
    digest = hashlib.sha256()
    with opened(name) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def opened(name: str) -> Iterator[BinaryIO]:
    """The archive, open for reading; StoreError when it is missing or unreadable."""
    try:
        handle = open(path_of(name), "rb")
    except FileNotFoundError as exc:
        raise StoreError(f"The archive {name} is missing from the backup store.",
                         details={"reason": "missing"}) from exc
    except OSError as exc:
        raise StoreError(f"The archive {name} cannot be read: {exc.strerror or exc}.",
                         details={"reason": "read"}) from exc
    with handle:
        yield handle


def exists(name: str) -> bool:
    return path_of(name).is_file()


def remove(name: str) -> None:
    """Remove the archive and any part of it being written; no-op when gone."""
    target = path_of(name)
    try:
        target.unlink(missing_ok=True)
        target.with_name(target.name + PART).unlink(missing_ok=True)
    except OSError as exc:
        raise StoreError(f"The archive {name} cannot be removed: {exc.strerror or exc}.",
                         details={"reason": "remove"}) from exc


def files(templates: bool = False) -> list[str]:
    """Every backup archive and partial archive in the store, by name (`.part` kept on);
    with `templates`, those of the templates/ folder instead."""
    folder, pattern = ((directory() / TEMPLATES, _TEMPLATE_NAME) if templates
                       else (directory(), _NAME))
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    return sorted(entry.name for entry in entries if entry.is_file() and (
        pattern.match(entry.name) or pattern.match(entry.name.removesuffix(PART))))


def copy(source: str, name: str) -> Written:
    """Make the archive `name` a copy of the archive `source`: a hard link when the
    filesystem allows, else a copy of its bytes; either way under `name` only once whole
    (the part is linked or written, synced, then renamed), with its size and sha256."""
    origin, target = path_of(source), path_of(name)
    part = target.with_name(target.name + PART)
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        part.unlink(missing_ok=True)
        os.link(origin, part)
    except FileNotFoundError as exc:
        raise StoreError(f"The archive {source} is missing from the backup store.",
                         details={"reason": "missing"}) from exc
    except OSError:
        def produce(sink: Sink) -> None:
            with opened(source) as handle:
                while chunk := handle.read(CHUNK):
                    sink.write(chunk)
        return write(name, produce)
    try:
        found = checksum_path(part)
        os.replace(part, target)
        _fsync_directory(target.parent)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return Written(name, target.stat().st_size, found)


def checksum_path(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise StoreError(f"{path.name} cannot be read: {exc.strerror or exc}.",
                         details={"reason": "read"}) from exc
    return digest.hexdigest()


def remove_file(name: str) -> None:
    """Remove a file `files()` listed (a `.part` too)."""
    base = name.removesuffix(PART)
    path = path_of(base)
    path.with_name(name).unlink(missing_ok=True)
