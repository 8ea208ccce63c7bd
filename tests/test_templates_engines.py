"""Templates on real Incus and real Docker, through the HTTP API of a served appliance
only, with the engine's own view checked by its command line (`incus` / `docker`).

A file written inside the instance (`incus exec` / `docker exec`) is backed up; the
backup is saved as a template; the instance and the backup are deleted; a new instance
made from the template has the file with its content. Once everything is deleted, the
engine and the backup store hold nothing of it.

Run wherever the engines answer (scripts/engines); under CI=true a missing engine fails.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.test_backups_engines import (
    ENGINES,
    Backups,
    _cleanup,
    _serve,
    engine_images,
    engine_names,
    inside,
    ref_of,
)
from tests.test_engines_e2e import Client, _prepare


@pytest.mark.parametrize("engine", ENGINES)
def test_a_template_makes_an_instance_after_its_backup_and_instance_are_gone(tmp_path,
                                                                             engine):
    data_dir = tmp_path / "data"
    image_id = _prepare(data_dir, engine)
    images_before = engine_images(engine)
    server = _serve(data_dir)
    refs: list[str] = []
    try:
        calls = Backups(Client(server.url))
        api = calls.api
        source = calls.create_instance("tpl-source", image_id=image_id)
        refs.append(ref_of(source))
        written = inside(engine, ref_of(source),
                         "mkdir -p /srv && printf 'made for the template' > /srv/golden.txt")
        assert written.returncode == 0, written.stderr
        backup = calls.back_up(source, "for the template")

        accepted = api.accepted("POST", f"{calls.base}/{source['id']}/backups/{backup['id']}"
                                        "/template", name="golden image")
        job = api.finish(accepted["job"])
        assert (job["type"], job["status"]) == ("template.create", "succeeded"), job
        template = api.get(f"/projects/{api.project}/templates/{accepted['template']['id']}")
        assert (template["status"], template["engine"], template["source_backup_id"]) == (
            "available", engine, backup["id"])
        archive = data_dir / "backups" / "templates" / f"{template['id']}.{engine}.archive"
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == template["sha256"]
        assert engine_images(engine) - images_before == set()  # a file, not an engine image

        calls.delete_instance(source)
        calls.delete_backup(backup)
        assert ref_of(source) not in engine_names(engine)
        assert not (data_dir / "backups" / f"{backup['id']}.{engine}.archive").exists()

        made = calls.create_instance("tpl-made", template_id=template["id"])
        refs.append(ref_of(made))
        assert made["status"] == "running"
        assert inside(engine, ref_of(made), "cat /srv/golden.txt").stdout == \
            "made for the template"
        assert inside(engine, ref_of(made), "hostname").stdout.strip() == ref_of(made)

        calls.delete_instance(made)
        deleted = api.session.delete(
            f"{api.url}/projects/{api.project}/templates/{template['id']}", timeout=60)
        assert deleted.status_code == 204, deleted.text
        assert not archive.exists()
        assert [p for p in (data_dir / "backups").rglob("*") if p.is_file()] == []
        assert engine_names(engine).isdisjoint(refs)
        assert engine_images(engine) - images_before == set()
        if engine == "docker":
            assert not any(ref in tag for tag in engine_images(engine) for ref in refs)
    finally:
        server.stop()
        _cleanup(engine, refs)
