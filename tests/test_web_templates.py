"""The dashboard's templates: "Save as template" on an available backup of the instance
page, the project's Templates page (list, rename, delete with confirmation), templates
offered in the create form beside images, and the project pages linking it. Every form
redirects after its post; names are escaped.
"""

from __future__ import annotations

import re

from appliance.drivers.fake import WRITE_FILE, FakeDriver
from appliance.models import Instance, Template
from tests.factories import EVIL, EVIL_ESCAPED, run_jobs
from tests.test_web_backups import base, instance, project, ref_of, the_backup  # noqa: F401


def test_a_backup_is_saved_as_a_template_and_makes_an_instance(app, ada, project, instance):  # noqa: F811
    FakeDriver("fake://tests").exec(ref_of(instance), ["sh", "-c", WRITE_FILE, "sh",
                                                       "/srv/motd", "from the template"])
    ada.post(base(project, instance) + "/backups", {"name": "nightly"})
    run_jobs(app)
    backup = the_backup(app)
    page = ada.page(base(project, instance))
    assert "Save as template" in page
    assert f"/backups/{backup.id}/template" in page
    posted = ada.post(base(project, instance) + f"/backups/{backup.id}/template",
                      {"name": EVIL})
    assert posted.status_code == 302
    assert posted.headers["Location"].startswith(f"/projects/{project}/templates")
    run_jobs(app)
    listed = ada.page(f"/projects/{project}/templates")
    assert EVIL_ESCAPED in listed and EVIL not in listed and ">available<" in listed
    with app.app_context():
        template = Template.get()
    assert f"template_id={template.id}" in listed

    form = ada.page(f"/projects/{project}/instances/new?template_id={template.id}")
    chosen = re.search(r'<input type="radio" name="source" value="template:[^"]+"[^>]*>', form)
    assert chosen and template.id in chosen.group(0) and "checked" in chosen.group(0)
    assert "project's templates" in form
    made = ada.post(base(project), {"name": "from-tpl", "plan_id": "pln_small",
                                    "source": f"template:{template.id}",
                                    "password_mode": "generate"})
    assert made.status_code in (302, 303)
    run_jobs(app)
    with app.app_context():
        copy = Instance.get(Instance.name == "from-tpl")
    assert copy.status == "running"
    assert FakeDriver("fake://tests").exec(ref_of(copy.id), ["cat", "/srv/motd"]) == (
        0, "from the template")


def test_rename_and_delete_redirect_and_errors_show_at_the_field(app, ada, project, instance):  # noqa: F811
    ada.post(base(project, instance) + "/backups", {"name": "nightly"})
    run_jobs(app)
    backup = the_backup(app)
    refused = ada.post(base(project, instance) + f"/backups/{backup.id}/template", {"name": ""})
    assert refused.status_code == 400 and "A template needs a name" in refused.get_data(True)
    ada.post(base(project, instance) + f"/backups/{backup.id}/template", {"name": "first"})
    run_jobs(app)
    with app.app_context():
        template = Template.get()
    one = f"/projects/{project}/templates/{template.id}"
    renamed = ada.post(one + "/rename", {"name": "second name"})
    assert renamed.status_code == 302
    assert "second name" in ada.page(renamed.headers["Location"])
    bad = ada.post(one + "/rename", {"name": "x" * 65})
    assert bad.status_code == 400 and 'aria-invalid="true"' in bad.get_data(True)
    deleted = ada.post(one + "/delete", {})
    assert deleted.status_code == 302
    assert "Template deleted." in ada.page(deleted.headers["Location"])
    with app.app_context():
        assert Template.get_by_id(template.id).status == "deleted"


def test_the_project_pages_link_the_templates(app, ada, project, instance):  # noqa: F811
    link = f'href="/projects/{project}/templates"'
    for page in (f"/projects/{project}", f"/projects/{project}/instances",
                 f"/projects/{project}/backups", base(project, instance)):
        assert link in ada.page(page), page
