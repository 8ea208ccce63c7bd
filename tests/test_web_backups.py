"""The dashboard's backups: the Backups card of the instance page (list with size and
status, Back up now, Restore with the instance's name typed, Delete), its refresh when
the job ends, the project's Backups page with "Create an instance from this", and the
create form offering backups beside images. Every form redirects after its post (or
gives htmx its card back); names are escaped and wrap.
"""

from __future__ import annotations

import re

import pytest

from appliance.drivers.fake import WRITE_FILE, FakeDriver
from appliance.models import Backup, Instance
from tests.factories import EVIL, EVIL_ESCAPED, default_project_id, error_next_to, run_jobs

HTMX = {"HX-Request": "true"}


@pytest.fixture
def project(app, ada):
    return default_project_id(app, "ada@example.test")


def base(project: str, instance_id: str = "") -> str:
    return f"/projects/{project}/instances" + (f"/{instance_id}" if instance_id else "")


@pytest.fixture
def instance(app, ada, project, catalog) -> str:
    made = ada.post(base(project), {"name": "web-1", "plan_id": "pln_small",
                                    "source": "image:" + catalog["image"],
                                    "password_mode": "generate"})
    assert made.status_code in (302, 303)
    run_jobs(app)
    with app.app_context():
        return Instance.get(Instance.name == "web-1").id


def ref_of(instance_id: str) -> str:
    return "ins-" + instance_id.removeprefix("ins_")


def the_backup(app) -> Backup:
    with app.app_context():
        return Backup.select().order_by(Backup.created_at.desc()).first()


def test_back_up_now_redirects_and_the_card_lists_it_with_its_size(app, ada, project,
                                                                  instance):
    page = ada.page(base(project, instance))
    assert 'id="backups"' in page and "No backups of this instance yet." in page
    assert 'hx-trigger="instance-settled from:body"' in page.split('id="backups"')[1][:400]
    posted = ada.post(base(project, instance) + "/backups", {"name": "first"})
    assert posted.status_code == 302
    assert posted.headers["Location"].startswith(base(project, instance))
    shown = ada.page(posted.headers["Location"])
    assert "Backing up" in shown and ">creating<" in shown
    run_jobs(app)
    card = ada.get(base(project, instance) + "?part=backups", headers=HTMX)
    html = card.get_data(as_text=True)
    assert card.status_code == 200 and html.lstrip().startswith("<section")
    assert "first" in html and ">available<" in html
    assert f"{the_backup(app).size_bytes} B" in html  # a small simulated archive


def test_back_up_now_from_htmx_gives_the_card_back(app, ada, project, instance):
    answer = ada.post(base(project, instance) + "/backups", {"name": ""}, headers=HTMX)
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert 'id="backups"' in html and "Backing up" in html


def test_restore_needs_the_name_typed_and_then_restores(app, ada, project, instance):
    engine = FakeDriver("fake://tests")
    engine.exec(ref_of(instance), ["sh", "-c", WRITE_FILE, "sh", "/root/a", "old"])
    ada.post(base(project, instance) + "/backups", {})
    run_jobs(app)
    engine.exec(ref_of(instance), ["sh", "-c", WRITE_FILE, "sh", "/root/a", "new"])
    backup = the_backup(app)
    url = f"{base(project, instance)}/backups/{backup.id}/restore"
    wrong = ada.post(url, {"confirm_name": "web-2"})
    assert wrong.status_code == 400
    page = wrong.get_data(as_text=True)
    assert error_next_to(page, f"f-restore-{backup.id}-confirm_name") == (
        "Type the instance&#39;s name exactly to confirm.")
    assert engine.exec(ref_of(instance), ["cat", "/root/a"]) == (0, "new")
    right = ada.post(url, {"confirm_name": "web-1"})
    assert right.status_code == 302
    assert "Restoring web-1" in ada.page(right.headers["Location"])
    run_jobs(app)
    assert engine.exec(ref_of(instance), ["cat", "/root/a"]) == (0, "old")


def test_a_restore_refused_by_the_service_says_why_on_the_card(app, ada, project, instance):
    ada.post(base(project, instance) + "/backups", {})
    backup = the_backup(app)  # still being taken: its job has not run
    answer = ada.post(f"{base(project, instance)}/backups/{backup.id}/restore",
                      {"confirm_name": "web-1"}, headers=HTMX)
    assert answer.status_code == 409
    assert "cannot be restored" in answer.get_data(as_text=True)


def test_delete_removes_it_from_the_store_and_the_card(app, ada,
                                                                          project, instance):
    ada.post(base(project, instance) + "/backups", {})
    run_jobs(app)
    backup = the_backup(app)
    gone = ada.post(f"{base(project, instance)}/backups/{backup.id}/delete", {})
    assert gone.status_code == 302
    page = ada.page(gone.headers["Location"])
    assert "Backup deleted." in page and "No backups of this instance yet." in page


def test_the_project_page_offers_an_instance_from_a_final_backup(app, ada, project, instance):
    ada.post(base(project, instance) + "/delete", {"confirm_name": "web-1",
                                                   "final_backup": "on"})
    run_jobs(app)
    page = ada.page(f"/projects/{project}/backups?kind=final")
    assert "web-1" in page and "(deleted)" in page and "Final backup" in page
    link = re.search(r'href="([^"]*instances/new\?backup_id=(bak_[0-9a-z]+))[^"]*"', page)
    assert link and "Create an instance from this" in page
    form = ada.page(link.group(1).replace("&amp;", "&"))
    backup_id = link.group(2)
    assert re.search(rf'value="backup:{backup_id}"[^>]*\s+checked', form)
    made = ada.post(base(project), {"name": "web-again", "plan_id": "pln_small",
                                    "source": f"backup:{backup_id}",
                                    "password_mode": "generate"})
    assert made.status_code in (302, 303)
    run_jobs(app)
    with app.app_context():
        again = Instance.get(Instance.name == "web-again")
        assert (again.status, again.image_id) == ("running", Backup.get_by_id(
            backup_id).image_id)
    assert ada.page(f"/projects/{project}/backups?kind=manual").count("<tr>") == 0


def test_names_are_escaped_and_wrap(app, ada, project, instance):
    ada.post(base(project, instance) + "/backups", {"name": EVIL})
    run_jobs(app)
    for page in (ada.page(base(project, instance)), ada.page(f"/projects/{project}/backups"),
                 ada.page(base(project) + "/new")):
        assert EVIL not in page and EVIL_ESCAPED in page
        assert f'<span class="long-name">{EVIL_ESCAPED}</span>' in page or (
            f'<strong class="long-name">{EVIL_ESCAPED}</strong>' in page)


def test_an_outsider_gets_404_for_the_card_and_the_posts(app, ada, eve, project, instance):
    ada.post(base(project, instance) + "/backups", {})
    run_jobs(app)
    backup = the_backup(app)
    assert eve.get(base(project, instance) + "?part=backups", headers=HTMX).status_code == 404
    for path in ("/backups", f"/backups/{backup.id}/restore", f"/backups/{backup.id}/delete"):
        assert eve.post(base(project, instance) + path, {"confirm_name": "web-1"}
                        ).status_code == 404
    with app.app_context():
        assert Backup.get_by_id(backup.id).status == "available"
