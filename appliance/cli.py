"""The `appliance` command: serve, init, migrate, create-admin, setup-link, backup,
restore, install-service, uninstall-service, version."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from appliance import __version__, logs
from appliance.config import ConfigError

log = logging.getLogger("appliance")


def _setup_logging(level: str, fmt: str = "text") -> None:
    logs.configure(level, fmt, sys.stderr)  # one line per event (appliance/logs.py)


def _build_app(data_dir: str | None, extra: dict[str, Any] | None = None, **kwargs: Any):
    # Each command imports what it needs when it runs: `appliance --help` and `version`
    # answer without loading Flask, the services and the database drivers.
    from appliance import create_app
    from appliance.config import load_settings
    from appliance.db import MigrationFailed

    overrides = dict(extra or {})
    if data_dir:
        overrides["DATA_DIR"] = data_dir
    try:
        settings = load_settings(overrides)
        _setup_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"])
        return create_app(overrides, **kwargs)
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    except MigrationFailed as exc:
        raise click.ClickException(str(exc)) from None


data_dir_option = click.option(
    "--data-dir", envvar=None, default=None,
    help="Data directory (default: APPLIANCE_DATA_DIR or ./data).")


def _load_env_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    # lazy, like every command's imports
    import os

    from appliance.service_install import read_env_file

    try:
        os.environ.update({name: setting for name, setting in read_env_file(Path(value)).items()
                           if name.startswith("APPLIANCE_")})
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror}") from None


env_file_option = click.option(
    "--env-file", default=None, expose_value=False, is_eager=True, callback=_load_env_file,
    metavar="FILE",
    help="Take the APPLIANCE_* settings of FILE over the environment's, as the service "
         "does (install-service writes /etc/appliance/appliance.env).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="appliance")
def main() -> None:
    """A self-hosted control panel: accounts, instances, metering, billing, webhooks."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port to listen on (default 8080).")
@click.option("--threads", default=None, type=int, help="Worker threads (default 8).")
@data_dir_option
def serve(host: str | None, port: int | None, threads: int | None, data_dir: str | None) -> None:
    """Apply migrations and serve the dashboard and the API with waitress."""
    # lazy, like every command's imports
    from appliance.memory import tune_malloc
    from appliance.serving import create_server

    tune_malloc()  # before the app allocates: large blocks go back to the system
    extra = {name: value for name, value in
             (("HOST", host), ("PORT", port), ("THREADS", threads)) if value is not None}
    app = _build_app(data_dir, extra)
    settings = app.config["APPLIANCE"]
    from appliance import db  # lazy, like every command's imports
    from appliance.services.ops import server_lock  # lazy, like every command's imports

    # `appliance restore` checks the lock; on SQLite it also keeps a second server (and
    # a second scheduler) off the same database.
    if not server_lock.hold(Path(settings["DATA_DIR"])) and db.is_sqlite():
        other = server_lock.holder(Path(settings["DATA_DIR"]))
        raise click.ClickException(
            f"another appliance serve (pid {other or '?'}) is serving the data directory "
            f"{settings['DATA_DIR']}. On SQLite one process serves a database: stop that "
            "one first, or move to PostgreSQL to run several (README, 'Scaling out').")
    try:
        server = create_server(app, settings)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {settings['HOST']}:{settings['PORT']}: {exc.strerror}") from None

    stopping: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        from appliance.services.events import live  # lazy, like every command's imports
        from appliance.services.instances import console

        if stopping:  # a second signal (the single binary's bootloader forwards the one a
            return    # terminal or systemd also sent) must not cut the shutdown short
        stopping.append(signum)
        live.end_all()  # live streams hold worker threads waitress waits for
        console.end_all()  # ... and so do web consoles' output streams
        raise SystemExit(0)  # waitress closes its sockets on SystemExit

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host_shown = settings["HOST"] if ":" not in settings["HOST"] else f"[{settings['HOST']}]"
    log.info("appliance %s listening on http://%s:%s (data in %s)", __version__,
             host_shown, getattr(server, "effective_port", settings["PORT"]),
             settings["DATA_DIR"])
    # lazy, like every command's imports
    from appliance import scheduler, systemd

    scheduler.start(app)
    systemd.notify("READY=1")  # Type=notify: started once it listens and runs its tasks
    try:
        server.run()
    finally:
        systemd.notify("STOPPING=1")
        scheduler.stop(app)


@main.command()
@data_dir_option
def init(data_dir: str | None) -> None:
    """Create the data directory, its secrets and the database schema."""
    app = _build_app(data_dir, offer_setup=False)
    click.echo(f"data directory ready: {app.config['APPLIANCE']['DATA_DIR']}")


@main.command()
@click.option("--status", "show_status", is_flag=True, help="List migrations and exit.")
@data_dir_option
def migrate(show_status: bool, data_dir: str | None) -> None:
    """Apply pending database migrations (start-up does this too)."""
    from appliance import db  # lazy, like every command's imports

    app = _build_app(data_dir, migrate=False)
    database = db.database.obj
    if show_status:
        listed = db.migration_status(database)
        for name, applied in listed:
            click.echo(f"{'applied' if applied else 'pending'}  {name}")
        pending = sum(not applied for _, applied in listed)
        click.echo(f"{pending} pending" if pending else "database is up to date")
        return
    try:
        applied = db.migrate(database,
                             backup_dir=Path(app.config["APPLIANCE"]["DATA_DIR"]) / "backups")
    except db.MigrationFailed as exc:
        raise click.ClickException(str(exc)) from None
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo("database is up to date")
    del app


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Archive to write (default: SELF_BACKUP_DIR/appliance-<version>-<time>"
                   ".tar.gz).")
@click.option("--with-instance-backups", is_flag=True,
              help="Also take the instance backup store (BACKUP_DIR).")
@click.option("--verify", "verify_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check this archive instead of writing one.")
@data_dir_option
def backup(output: Path | None, with_instance_backups: bool, verify_file: Path | None,
           data_dir: str | None) -> None:
    """Write one archive of the appliance (database, secrets, uploads), safe while it serves."""
    # lazy, like every command's imports
    from appliance.config import load_settings
    from appliance.db import database
    from appliance.services.ops import archive, selfbackup

    if verify_file is not None:
        try:
            manifest = selfbackup.verify(verify_file)
        except archive.BackupError as exc:
            raise click.ClickException(f"{verify_file}: {exc.message}") from None
        click.echo(f"{verify_file}: ok - appliance {manifest['appliance_version']}, schema "
                   f"{manifest['schema']}, made {manifest['created_at']}, "
                   f"{len(manifest['members'])} files checked")
        try:
            archive.check_schema(manifest)
        except archive.BackupError as exc:
            click.echo(f"note: this appliance cannot restore it: {exc.message}")
        return
    try:
        selfbackup.check_source(load_settings({"DATA_DIR": data_dir} if data_dir else {}))
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    except archive.BackupError as exc:
        raise click.ClickException(exc.message) from None
    _build_app(data_dir, migrate=False, offer_setup=False)
    try:
        with database.connection_context():
            result = selfbackup.create_backup(output, with_instance_backups=with_instance_backups)
    except archive.BackupError as exc:
        raise click.ClickException(f"backup failed: {exc.message}") from None
    click.echo(f"backup written: {result.path} ({result.size_bytes} bytes, schema "
               f"{result.manifest['schema']}, sha256 {result.sha256})")
    if not result.secret_key_included:
        click.echo("note: SECRET_KEY is set outside the data directory and is not in the "
                   "archive; keep it with the archive.")


@main.command()
@click.argument("archive_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@data_dir_option
def restore(archive_file: Path, data_dir: str | None) -> None:
    """Restore an archive of `appliance backup` into a stopped or new data directory."""
    # lazy, like every command's imports
    from appliance.config import load_settings
    from appliance.services.ops import archive
    from appliance.services.ops import restore as restoring

    overrides = {"DATA_DIR": data_dir} if data_dir else {}
    try:
        settings = load_settings(overrides)
        _setup_logging(settings["LOG_LEVEL"])
        done = restoring.restore(archive_file, settings)
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    except archive.BackupError as exc:
        raise click.ClickException(f"restore refused: {exc.message}") from None
    manifest = done.manifest
    click.echo(f"restored {archive_file} (appliance {manifest['appliance_version']}, schema "
               f"{manifest['schema']}, made {manifest['created_at']}) into {done.data_dir}")
    if done.moved_aside is not None:
        click.echo(f"the previous data directory is now {done.moved_aside}"
                   + ("; its backups/ moved into the restored one" if done.backups_carried
                      else ""))
    _build_app(str(done.data_dir), offer_setup=False)  # applies pending migrations
    click.echo("migrations applied; start the appliance with `appliance serve`")


@main.command("create-admin")
@env_file_option
@click.option("--email", required=True, help="Email address of the new administrator.")
@click.option("--name", "display_name", default="", help="Display name.")
@click.option("--password", envvar="APPLIANCE_ADMIN_PASSWORD", default=None,
              help="Password (default: asked for, or APPLIANCE_ADMIN_PASSWORD).")
@data_dir_option
def create_admin(email: str, display_name: str, password: str | None,
                 data_dir: str | None) -> None:
    """Create an administrator account (works at any time, from a trusted shell)."""
    # lazy, like every command's imports
    from appliance.db import database
    from appliance.errors import ApplianceError
    from appliance.services.accounts import users

    _build_app(data_dir, offer_setup=False)
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with database.connection_context():
            user = users.create_admin(email, password, display_name)
    except ApplianceError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"administrator {user.email} created ({user.id})")


@main.command("setup-link")
@env_file_option
@data_dir_option
def setup_link(data_dir: str | None) -> None:
    """Print a fresh one-time set-up link (the last one stops working) while no account
    exists."""
    # lazy, like every command's imports
    from appliance import invocation
    from appliance.db import database
    from appliance.services.accounts import setup_link as links

    app = _build_app(data_dir, offer_setup=False)
    with database.connection_context():
        token = links.issue()
    if token is None:
        raise click.ClickException(
            "the appliance is already set up: sign in, or add an administrator with "
            + invocation.command("create-admin", "--email", "you@example.com",
                                 data_dir=app.config["APPLIANCE"]["DATA_DIR"]))
    with app.app_context():
        click.echo(links.link(token))


@main.command("install-service")
@click.option("--user", default=None,
              help="System user the service runs as, created with useradd --system "
                   "(default: appliance).")
@click.option("--data-dir", default=None,
              help="Data directory of the service, created with mode 0700 (default: "
                   "/var/lib/appliance).")
@click.option("--backup-dir", default=None, metavar="DIR",
              help="Another directory the service may write, e.g. a NAS mount for backups "
                   "(default: none; DATA_DIR/backups is inside the data directory).")
@click.option("--host", default=None, help="Address to listen on (default: 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port to listen on (default: 8080).")
@click.option("--group-for-engines", "groups", default=None, metavar="G1,G2",
              help="Groups whose engine sockets the service may use (default: those of "
                   "incus-admin and docker that exist here; '' for none). Membership of "
                   "docker or incus-admin is as good as root on this machine.")
@click.option("--root", "root", default=None, type=click.Path(file_okay=False),
              help="Write every file under this directory instead of /, create no user and "
                   "touch nothing outside it (no root needed).")
@click.option("--print-unit", is_flag=True,
              help="Print the unit for these options (the defaults for the others) and "
                   "write nothing.")
def install_service(*, user: str | None, data_dir: str | None, backup_dir: str | None,
                    host: str | None, port: int | None, groups: str | None, root: str | None,
                    print_unit: bool) -> None:
    """Install the appliance as a hardened systemd service (appliance.service).

    Run again (with a new binary, say), it keeps the options of the last install that
    are not given anew."""
    # lazy, like every command's imports
    from appliance import service_install as service

    given = {"user": user, "data_dir": data_dir, "backup_dir": backup_dir, "host": host,
             "port": port, "engine_groups": None if groups is None else tuple(
                 group.strip() for group in groups.split(",") if group.strip())}
    installer = service.Installer(Path(root).resolve() if root else None, click.echo)
    try:
        options = service.options_for(given, {} if print_unit else installer.previous())
        if print_unit:
            options.check()
            click.echo(service.render_unit(options), nl=False)
            return
        installer.install(options)
    except service.InstallError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename}: {exc.strerror}") from None


@main.command("uninstall-service")
@click.option("--root", "root", default=None, type=click.Path(file_okay=False),
              help="Remove what install-service --root DIR wrote under DIR.")
def uninstall_service(root: str | None) -> None:
    """Remove the service's unit and the /usr/local/bin/appliance it installed; the data
    directory, its settings file and the user stay."""
    # lazy, like every command's imports
    from appliance import service_install as service

    try:
        service.Installer(Path(root).resolve() if root else None, click.echo).uninstall()
    except service.InstallError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename}: {exc.strerror}") from None


@main.command("check-backups")
@click.option("--dry-run", is_flag=True, help="Only report; change nothing.")
@data_dir_option
def check_backups(dry_run: bool, data_dir: str | None) -> None:
    """Compare the backup store with the backups (start-up does this too).

    Without --dry-run it repairs what it finds and asks the engines to remove what
    interrupted exports left: run it while `appliance serve` is stopped.
    """
    from appliance.db import database  # lazy, like every command's imports
    from appliance.services.instances import backup_check

    app = _build_app(data_dir)
    with app.app_context(), database.connection_context():
        report = backup_check.check(repair=not dry_run)
    for line in report.lines():
        click.echo(line)
    if report.clean and not report.problems:
        click.echo("backups and the backup store agree")
    elif dry_run and not report.clean:
        raise SystemExit(1)


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"appliance {__version__}")
