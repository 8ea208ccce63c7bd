"""The start-up check of backups: every archive has its row and every row its archive.

Run by the scheduler before the job runner starts (so no backup job is running), and by
`appliance check-backups`. It compares the store (services/instances/store.py) with the
`backup` rows, and asks each healthy node's engine to remove what an export or restore
interrupted by a crash left (`Driver.remove_leftovers`). What it finds, it reports (the
log) and, unless asked only to look, repairs:

- a file in the store that no kept backup names (a deleted backup's, a part written by a
  killed job, a stranger's archive) is removed; a backup being taken keeps its part (its
  job, due again, writes it anew);
- a backup whose archive is missing is marked failed (backup.failed) - unless the store
  holds none of the archives it should, which looks like a mount that is not there
  (BACKUP_DIR on a NAS): then nothing is marked, and the report says so;
- a backup left `deleting` by a crash is deleted; one left `creating` or `restoring`
  with no job that will finish it is failed or available again.

Templates (services/instances/templates.py, the store's templates/ folder) are checked
the same way: a file no kept template names is removed (a template being made by a job
that will run again keeps its part), an available template whose archive is missing is
failed, one left `deleting` is deleted and one left `creating` by no job is failed.
Their entries in the report are named `templates/<file>` and by `tpl_` id.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from appliance.db import database
from appliance.errors import Unsupported
from appliance.models import Backup, Job, Node, Template
from appliance.services import clock
from appliance.services.events import outbox
from appliance.services.instances import backups, jobs, nodes, store, templates

log = logging.getLogger("appliance.backups")


@dataclass
class Report:
    orphan_files: list[str] = field(default_factory=list)
    missing_archives: list[str] = field(default_factory=list)  # backup ids
    finished_deletes: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)  # stuck creating / restoring
    engine_leftovers: list[str] = field(default_factory=list)
    store_unmounted: bool = False
    problems: list[str] = field(default_factory=list)  # what could not be looked at

    @property
    def clean(self) -> bool:
        return not (self.orphan_files or self.missing_archives or self.finished_deletes
                    or self.settled or self.engine_leftovers or self.store_unmounted)

    def lines(self) -> list[str]:
        found = [f"{len(getattr(self, name))} {label}: {', '.join(getattr(self, name))}"
                 for name, label in (
                     ("orphan_files", "archive file(s) no backup knows"),
                     ("missing_archives", "backup(s) whose archive is missing"),
                     ("finished_deletes", "interrupted delete(s)"),
                     ("settled", "backup(s) left in progress by no job"),
                     ("engine_leftovers", "engine leftover(s) of exports and restores"))
                 if getattr(self, name)]
        if self.store_unmounted:
            found.append(f"the backup store {store.directory()} holds none of the archives "
                         "it should: is it mounted? Nothing was marked missing")
        return found + self.problems


def _jobs_using(key: str = "backup_id") -> set[str]:
    """Backup (or template) ids an unfinished job will still read or write."""
    used = set()
    for job in Job.select(Job.params).where(Job.status.in_(jobs.UNFINISHED),
                                            Job.params.contains(f'"{key}"')):
        found = json.loads(job.params or "{}").get(key)
        if found:
            used.add(found)
    return used


def check(repair: bool = True) -> Report:
    """Compare the store, the rows and the engines; repair unless `repair` is False
    (then the engines are not asked: removing their leftovers is the only way to see
    them)."""
    report = Report()
    busy = _jobs_using()
    _check_rows(report, busy, repair)
    _check_files(report, busy, repair)
    _check_templates(report, _jobs_using("template_id"), repair)
    if repair:
        _engine_leftovers(report)
    for line in report.lines():
        log.warning("backup check: %s", line)
    return report


def _check_rows(report: Report, busy: set[str], repair: bool) -> None:
    rows = list(Backup.select(Backup, Node).join(Node, on=(Backup.node == Node.id))
                .where(Backup.deleted_at.is_null()))
    for backup in rows:
        if backup.status == "deleting" and backup.id not in busy:
            report.finished_deletes.append(backup.id)
            if repair:
                backups.finish_delete(backup)
        elif backup.status in ("creating", "restoring") and backup.id not in busy:
            report.settled.append(backup.id)
            if repair:
                _settle(backup)
    expected = [b for b in rows if b.archive and b.status in ("available", "restoring")]
    try:
        present = set(store.files())
    except OSError as exc:
        report.problems.append(f"the backup store cannot be listed: {exc}")
        return
    missing = [b for b in expected if b.archive not in present]
    if missing and len(missing) == len(expected):
        report.store_unmounted = True
        return
    for backup in missing:
        report.missing_archives.append(backup.id)
        if repair:
            _mark_missing(backup)


def _settle(backup: Backup) -> None:
    if backup.status == "restoring":
        with database.atomic():
            Backup.update(status="available", updated_at=clock.now()).where(
                Backup.id == backup.id, Backup.status == "restoring").execute()
    else:
        backups.mark_failed(backup.id, "Its job ended without finishing it.")


def _mark_missing(backup: Backup) -> None:
    message = "The archive is missing from the backup store."
    with database.atomic():
        changed = Backup.update(status="failed", error=message, size_gb=0,
                                updated_at=clock.now()).where(
            Backup.id == backup.id, Backup.status.in_(backups.USABLE)).execute()
        if changed:
            backups.emit_failed(backup.id, message)


def _check_files(report: Report, busy: set[str], repair: bool) -> None:
    kept = {backup.archive: backup for backup in Backup.select().where(
        Backup.deleted_at.is_null(), Backup.archive.is_null(False),
        Backup.status.in_(backups.USABLE))}
    taking = {backup.id for backup in Backup.select(Backup.id).where(
        Backup.status == "creating", Backup.deleted_at.is_null())} & busy
    try:
        found = store.files()
    except OSError as exc:
        report.problems.append(f"the backup store cannot be listed: {exc}")
        return
    for name in found:
        base = name.removesuffix(store.PART)
        if name in kept or base.split(".", 1)[0] in taking:
            continue
        report.orphan_files.append(name)
        if repair:
            try:
                store.remove_file(name)
            except OSError as exc:
                report.problems.append(f"{name} cannot be removed: {exc}")


def _engine_leftovers(report: Report) -> None:
    for node in list(Node.select().where(Node.enabled, Node.health == "healthy")):
        try:
            removed = nodes.driver_for(node).remove_leftovers()
        except Unsupported:
            continue
        except Exception as exc:  # whatever an engine does, the start-up goes on
            report.problems.append(f"node {node.name}: leftovers not checked ({exc})")
            continue
        report.engine_leftovers += [f"{node.name}: {item}" for item in removed]


def _check_templates(report: Report, busy: set[str], repair: bool) -> None:
    rows = list(Template.select(Template, Node).join(Node, on=(Template.node == Node.id))
                .where(Template.deleted_at.is_null()))
    _settle_templates(report, rows, busy, repair)
    try:
        found = store.files(templates=True)
    except OSError as exc:
        report.problems.append(f"the template store cannot be listed: {exc}")
        return
    expected = [t for t in rows if t.archive and t.status == "available"]
    missing = [t for t in expected if t.archive not in found]
    if missing and len(missing) == len(expected) and not found:
        report.store_unmounted = True
    else:
        for template in missing:
            report.missing_archives.append(template.id)
            if repair:
                _template_missing(template)
    kept = {t.archive for t in expected}
    making = {t.id for t in rows if t.status == "creating"} & busy
    for name in found:
        if name in kept or name.removesuffix(store.PART).split(".", 1)[0] in making:
            continue
        report.orphan_files.append(f"{store.TEMPLATES}/{name}")
        if repair:
            try:
                store.remove_file(name)
            except OSError as exc:
                report.problems.append(f"{name} cannot be removed: {exc}")


def _template_missing(template: Template) -> None:
    message = "The archive is missing from the backup store."
    with database.atomic():
        changed = Template.update(status="failed", error=message, size_gb=0,
                                  updated_at=clock.now()).where(
            Template.id == template.id, Template.status == "available").execute()
        if changed:
            outbox.emit("template.failed", project_id=template.project_id,
                        data={"template": templates.snapshot(Template.get_by_id(template.id)),
                              "error": message, "job_id": None})


def _settle_templates(report: Report, rows: list[Template], busy: set[str],
                      repair: bool) -> None:
    for template in rows:
        if template.status == "deleting" and template.id not in busy:
            report.finished_deletes.append(template.id)
            if repair:
                templates.finish_delete(template)
        elif template.status == "creating" and template.id not in busy:
            report.settled.append(template.id)
            if repair:
                templates.mark_failed(template.id, "Its job ended without finishing it.")
