"""Projects and their members, and the role check every project-scoped service uses.

Roles rank viewer < member < admin < owner; each may do what the ones before it may:
viewers read, members operate instances, admins manage members, keys and webhooks,
owners delete the project and hand out or take back ownership. A project the caller
does not belong to (or that the caller's key is not restricted to) does not exist for
them: 404, never 403, so existence does not leak.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peewee import JOIN, IntegrityError, fn

from appliance.db import database
from appliance.errors import Conflict, Forbidden, InvalidRequest, NotFound
from appliance.models import ApiKey, Membership, Project, User
from appliance.models.projects import ROLES
from appliance.services import audit, clock, pagination
from appliance.services.accounts import authcache
from appliance.services.events import outbox
from appliance.services.ids import new_id
from appliance.services.principal import Principal

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
DEFAULT_PROJECT_NAME = "Default project"
NAME_MAX = 100

# Checks for the instances, webhooks and other issues: the least role an action needs.
READ, OPERATE, MANAGE, OWN = "viewer", "member", "admin", "owner"

# Set by services that own things inside projects (instances): is the project empty?
_holders: list[Callable[[str], tuple[int, str]]] = []


@dataclass(frozen=True)
class Access:
    """A project as one caller sees it: the project and the caller's role in it."""

    project: Project
    role: str

    def at_least(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def register_holder(count_live_things: Callable[[str], tuple[int, str]]) -> None:
    """`count_live_things(project_id) -> (count, what)` refuses deleting a non-empty project."""
    if count_live_things not in _holders:
        _holders.append(count_live_things)


def _clean_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise InvalidRequest("A project needs a name.", field="name")
    if len(name) > NAME_MAX:
        raise InvalidRequest(f"A project name has at most {NAME_MAX} characters.", field="name")
    return name


def _refuse_taken_name(owner_ids: list[str], name: str, project_id: str | None = None) -> None:
    """409 `project_name_taken` (field name) when one of these owners already owns a live
    project of this name, compared without case; `project_id` is the one being renamed.

    Enforced here rather than by an index: a project has several owners, and projects
    made before this rule may share a name (they keep it until renamed)."""
    query = (Project.select(Project.id)
             .join(Membership, on=(Membership.project == Project.id))
             .where(Membership.user.in_(owner_ids), Membership.role == "owner",
                    Project.deleted_at.is_null(), fn.LOWER(Project.name) == name.lower()))
    if project_id is not None:
        query = query.where(Project.id != project_id)
    if query.exists():
        raise Conflict(f"You already have a project named {name}; pick another name.",
                       code="project_name_taken", details={"field": "name"})


def _check_role(role: str, field: str = "role") -> str:
    if role not in ROLE_RANK:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}.", field=field)
    return role


def _new_project(user: User, name: str, *, is_default: bool = False) -> Project:
    now = clock.now()
    project = Project.create(id=new_id("prj"), name=name, is_default=is_default,
                             created_by=user, created_at=now, updated_at=now)
    Membership.create(project=project, user=user, role="owner", created_at=now, updated_at=now)
    return project


def create_default_project(user: User) -> Project:
    """Every new user owns a default project. Call inside the user's transaction."""
    return _new_project(user, DEFAULT_PROJECT_NAME, is_default=True)


def access(principal: Principal, project_id: str, least: str = READ) -> Access:
    """The project with the caller's role, or 404 / 403.

    404 `project_not_found` when the project is deleted, the caller is not a member, or
    the caller's key is restricted to another project. 403 `role_denied` (naming the
    role needed) when the caller is a member with too small a role. An administrator
    acting as the operator (`Principal.as_operator`) gets any live project with
    OPERATOR_ROLE.
    """
    if principal.project_id is not None and principal.project_id != project_id:
        raise _not_found()
    if principal.operator and principal.is_admin:
        found = _operator_access(project_id)
    else:
        found = _member_access(principal, project_id)
    if not found.at_least(least):
        raise Forbidden(f"This needs the {least} role in the project; you are {found.role}.",
                        code="role_denied", details={"required_role": least,
                                                     "role": found.role})
    return found


# The role an administrator acting as the operator has in anyone's project: enough to
# operate its instances (power, delete), not to manage its members, keys or webhooks.
OPERATOR_ROLE = OPERATE


def _operator_access(project_id: str) -> Access:
    """Any live project, for an administrator acting through the admin routes (never
    cached: the same user's own membership answers are)."""
    project = Project.get_or_none(Project.id == project_id, Project.deleted_at.is_null())
    if project is None:
        raise _not_found()
    return Access(project, OPERATOR_ROLE)


def _member_access(principal: Principal, project_id: str) -> Access:
    cache_key = ("access", principal.user.id, project_id)
    found = authcache.get(cache_key)
    if found is None:
        gen = authcache.generation()
        row = (Project.select(Project, Membership.role.alias("caller_role"))
               .join(Membership, on=(Membership.project == Project.id))
               .where(Project.id == project_id, Project.deleted_at.is_null(),
                      Membership.user == principal.user.id)
               .objects().first())
        if row is None:
            raise _not_found()
        found = Access(row, row.caller_role)
        authcache.put(cache_key, found, gen)
    return found


def _not_found() -> NotFound:
    return NotFound("No such project.", code="project_not_found")


def list_projects(principal: Principal, limit: int = 50,
                  cursor: str | None = None) -> pagination.Page[Access]:
    """The live projects the caller belongs to (only its own for a restricted key)."""
    query = (Project.select(Project, Membership.role.alias("caller_role"))
             .join(Membership, on=(Membership.project == Project.id))
             .where(Membership.user == principal.user.id, Project.deleted_at.is_null()))
    if principal.project_id is not None:
        query = query.where(Project.id == principal.project_id)
    rows, next_cursor = pagination.page(query.objects(), Project, limit, cursor)
    return [Access(row, row.caller_role) for row in rows], next_cursor


def all_projects(principal: Principal) -> list[Access]:
    """Every project of the caller, default first then by name (the dashboard switcher)."""
    accesses, cursor = list_projects(principal, pagination.MAX_LIMIT)
    while cursor:
        more, cursor = list_projects(principal, pagination.MAX_LIMIT, cursor)
        accesses += more
    return sorted(accesses, key=lambda a: (not a.project.is_default, a.project.name.lower()))


def default_project(principal: Principal) -> Access | None:
    accesses = all_projects(principal)
    return accesses[0] if accesses else None


def create_project(principal: Principal, name: str) -> Access:
    """A new project the caller owns. 400 for an empty or too long name; 409
    `project_name_taken` (field name) when the caller owns a live project of that name."""
    principal.require_scope("projects:write")
    if principal.project_id is not None:
        raise Forbidden("A key restricted to one project cannot create projects.",
                        code="key_restricted")
    name = _clean_name(name)
    with database.atomic():
        _refuse_taken_name([principal.user.id], name)
        project = _new_project(principal.user, name)
        audit.record("project.created", actor=principal.user, target_type="project",
                     target_id=project.id, ip=principal.ip, name=name)
    return Access(project, "owner")


@authcache.invalidates
def rename_project(principal: Principal, project_id: str, name: str) -> Access:
    """Admins rename; 409 `project_name_taken` (field name) when an owner of the project
    already owns another live project of that name."""
    principal.require_scope("projects:write")
    name = _clean_name(name)
    with database.atomic():
        found = access(principal, project_id, MANAGE)
        owners = [m.user_id for m in Membership.select(Membership.user).where(
            Membership.project == project_id, Membership.role == "owner")]
        _refuse_taken_name(owners, name, project_id)
        Project.update(name=name, updated_at=clock.now()).where(
            Project.id == project_id).execute()
        audit.record("project.renamed", actor=principal.user, target_type="project",
                     target_id=project_id, ip=principal.ip, name=name, previous=found.project.name)
    return Access(Project.get_by_id(project_id), found.role)


@authcache.invalidates
def delete_project(principal: Principal, project_id: str) -> None:
    """Owners delete a project that holds nothing; its keys are revoked with it.

    409 `project_not_empty` while it holds instances (or other live things); 409
    `default_project` for the project every user keeps.
    """
    principal.require_scope("projects:write")
    with database.atomic():
        found = access(principal, project_id, OWN)
        if found.project.is_default:
            raise Conflict("The default project cannot be deleted; rename it instead.",
                           code="default_project")
        for count_live_things in _holders:
            count, what = count_live_things(project_id)
            if count:
                raise Conflict(f"The project still holds {count} {what}; delete them first.",
                               code="project_not_empty", details={what: count})
        now = clock.now()
        Project.update(deleted_at=now, updated_at=now).where(Project.id == project_id).execute()
        ApiKey.update(revoked_at=now).where(ApiKey.project == project_id,
                                            ApiKey.revoked_at.is_null()).execute()
        audit.record("project.deleted", actor=principal.user, target_type="project",
                     target_id=project_id, ip=principal.ip, name=found.project.name)


# Members ---------------------------------------------------------------------------


def list_members(principal: Principal, project_id: str, limit: int = 50,
                 cursor: str | None = None) -> pagination.Page[Membership]:
    access(principal, project_id, READ)
    query = (Membership.select(Membership, User).join(User)
             .where(Membership.project == project_id))
    return pagination.page(query, Membership, limit, cursor)


def _owner_count(project_id: str) -> int:
    return Membership.select().where(Membership.project == project_id,
                                     Membership.role == "owner").count()


def _guard_owner_change(found: Access, target: Membership, new_role: str | None) -> None:
    """Only owners touch owners; the last owner stays an owner."""
    touches_owner = target.role == "owner" or new_role == "owner"
    if touches_owner and not found.at_least(OWN):
        raise Forbidden("Only an owner can grant or take away the owner role.",
                        code="role_denied", details={"required_role": OWN, "role": found.role})
    if target.role == "owner" and new_role != "owner" and _owner_count(target.project_id) <= 1:
        raise Conflict("A project keeps at least one owner; make someone else owner first.",
                       code="last_owner")


def _membership(project_id: str, user_id: str) -> Membership:
    member = (Membership.select(Membership, User).join(User)
              .where(Membership.project == project_id, Membership.user == user_id).first())
    if member is None:
        raise NotFound("No such member in this project.", code="member_not_found")
    return member


@authcache.invalidates
def add_member(principal: Principal, project_id: str, email: str, role: str) -> Membership:
    """Add an existing user by email. 400 `user_not_found` (field email) when none has it."""
    principal.require_scope("projects:write")
    _check_role(role)
    email = (email or "").strip().lower()
    with database.atomic():
        found = access(principal, project_id, MANAGE)
        if role == "owner" and not found.at_least(OWN):
            raise Forbidden("Only an owner can add another owner.", code="role_denied",
                            details={"required_role": OWN, "role": found.role})
        user = User.get_or_none(User.email == email)
        if user is None:
            raise InvalidRequest("No account has this email address; ask them to sign up "
                                 "first.", code="user_not_found", field="email")
        now = clock.now()
        try:
            with database.atomic():
                member = Membership.create(project=project_id, user=user, role=role,
                                           created_at=now, updated_at=now)
        except IntegrityError:
            raise Conflict("This user is already a member.", code="already_member",
                           details={"field": "email"}) from None
        audit.record("project.member_added", actor=principal.user, target_type="project",
                     target_id=project_id, ip=principal.ip, user_id=user.id, role=role)
        outbox.emit("member.added", project_id=project_id, user_id=user.id, data={
            "project_id": project_id, "user_id": user.id, "email": user.email, "role": role,
            "actor_id": principal.user.id})
    member.user = user
    return member


@authcache.invalidates
def set_member_role(principal: Principal, project_id: str, user_id: str, role: str) -> Membership:
    principal.require_scope("projects:write")
    _check_role(role)
    with database.atomic():
        found = access(principal, project_id, MANAGE)
        member = _membership(project_id, user_id)
        _guard_owner_change(found, member, role)
        Membership.update(role=role, updated_at=clock.now()).where(
            Membership.id == member.id).execute()
        audit.record("project.member_role_set", actor=principal.user, target_type="project",
                     target_id=project_id, ip=principal.ip, user_id=user_id, role=role,
                     previous=member.role)
    member.role = role
    return member


@authcache.invalidates
def remove_member(principal: Principal, project_id: str, user_id: str) -> None:
    """Admins remove members; anyone may leave. The last owner can do neither."""
    leaving = user_id == principal.user.id
    if not leaving:
        principal.require_scope("projects:write")
    with database.atomic():
        found = access(principal, project_id, READ if leaving else MANAGE)
        member = _membership(project_id, user_id)
        if not leaving:
            _guard_owner_change(found, member, None)
        elif member.role == "owner" and _owner_count(project_id) <= 1:
            raise Conflict("A project keeps at least one owner; make someone else owner "
                           "first.", code="last_owner")
        Membership.delete().where(Membership.id == member.id).execute()
        audit.record("project.member_removed", actor=principal.user, target_type="project",
                     target_id=project_id, ip=principal.ip, user_id=user_id)
        outbox.emit("member.removed", project_id=project_id, user_id=user_id, data={
            "project_id": project_id, "user_id": user_id, "role": member.role,
            "actor_id": principal.user.id})


def member_count(project_id: str) -> int:
    return Membership.select().where(Membership.project == project_id).count()


def projects_of(user: User) -> list[Project]:
    """Live projects of a user (the admin's user page)."""
    return list(Project.select().join(Membership, JOIN.INNER,
                                      on=(Membership.project == Project.id))
                .where(Membership.user == user, Project.deleted_at.is_null())
                .order_by(Project.created_at))
