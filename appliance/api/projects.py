"""Projects and members over JSON, and the keys restricted to a project."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from appliance.api.api_keys import ApiKeyList, ApiKeyOut
from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.services import projects
from appliance.services.accounts import api_keys
from appliance.services.principal import Principal
from appliance.services.projects import Access

bp = ApiBlueprint("projects_api", __name__)
TAGS = ("projects",)
AUTH = USER_OR_KEY
Role = Literal["viewer", "member", "admin", "owner"]


class ProjectOut(Schema):
    id: str
    name: str
    is_default: bool
    role: Role = Field(description="The caller's role in the project.")
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, found: Access) -> ProjectOut:
        project = found.project
        # Built from typed model fields: construct without re-validating (a hot path).
        return cls.model_construct(id=project.id, name=project.name,
                                   is_default=project.is_default, role=found.role,
                                   created_at=project.created_at,
                                   updated_at=project.updated_at)


class ProjectList(Schema):
    data: list[ProjectOut]
    page: PageInfo


class ProjectIn(Schema):
    name: str = Field(min_length=1, max_length=projects.NAME_MAX)


class MemberOut(Schema):
    user_id: str
    email: str
    display_name: str
    role: Role
    added_at: dt.datetime

    @classmethod
    def of(cls, member) -> MemberOut:
        return cls(user_id=member.user.id, email=member.user.email,
                   display_name=member.user.display_name, role=member.role,
                   added_at=member.created_at)


class MemberList(Schema):
    data: list[MemberOut]
    page: PageInfo


class MemberIn(Schema):
    email: str = Field(min_length=3, max_length=254)
    role: Role = "member"


class MemberRoleIn(Schema):
    role: Role


@bp.operation("/projects", summary="Your projects", tags=TAGS, query=ListQuery,
              response=ProjectList, auth=AUTH)
def list_projects(principal: Principal, query: ListQuery):
    rows, next_cursor = projects.list_projects(principal, query.limit, query.cursor)
    return page_body([ProjectOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation("/projects", "POST", summary="Create a project (you become its owner)",
              tags=TAGS, body=ProjectIn, response=ProjectOut, status=201, auth=AUTH,
              errors=(409,))
def create_project(principal: Principal, body: ProjectIn):
    return ProjectOut.of(projects.create_project(principal, body.name))


@bp.operation("/projects/<project_id>", summary="One project", tags=TAGS, response=ProjectOut,
              auth=AUTH, errors=(404,))
def get_project(principal: Principal, project_id: str):
    return ProjectOut.of(projects.access(principal, project_id))


@bp.operation("/projects/<project_id>", "PATCH", summary="Rename a project (admin)",
              tags=TAGS, body=ProjectIn, response=ProjectOut, auth=AUTH, errors=(404, 409))
def rename_project(principal: Principal, project_id: str, body: ProjectIn):
    return ProjectOut.of(projects.rename_project(principal, project_id, body.name))


@bp.operation("/projects/<project_id>", "DELETE", summary="Delete an empty project (owner)",
              tags=TAGS, status=204, auth=AUTH, errors=(404, 409),
              description="Refused with 409 `project_not_empty` while it holds instances, "
                          "and 409 `default_project` for your default project. Keys "
                          "restricted to the project are revoked.")
def delete_project(principal: Principal, project_id: str):
    projects.delete_project(principal, project_id)
    return None, 204


@bp.operation("/projects/<project_id>/members", summary="Members of a project", tags=TAGS,
              query=ListQuery, response=MemberList, auth=AUTH, errors=(404,))
def list_members(principal: Principal, project_id: str, query: ListQuery):
    rows, next_cursor = projects.list_members(principal, project_id, query.limit, query.cursor)
    return page_body([MemberOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation("/projects/<project_id>/members", "POST", summary="Add a member by email (admin)",
              tags=TAGS, body=MemberIn, response=MemberOut, status=201, auth=AUTH,
              errors=(404,),
              description="The person needs an account. Only owners add owners.")
def add_member(principal: Principal, project_id: str, body: MemberIn):
    return MemberOut.of(projects.add_member(principal, project_id, body.email, body.role))


@bp.operation("/projects/<project_id>/members/<user_id>", "PATCH",
              summary="Change a member's role (admin)", tags=TAGS, body=MemberRoleIn,
              response=MemberOut, auth=AUTH, errors=(404, 409),
              description="Only owners grant or take away the owner role; the last owner "
                          "stays owner (409 `last_owner`).")
def set_member_role(principal: Principal, project_id: str, user_id: str, body: MemberRoleIn):
    return MemberOut.of(projects.set_member_role(principal, project_id, user_id, body.role))


@bp.operation("/projects/<project_id>/members/<user_id>", "DELETE",
              summary="Remove a member (admin), or leave", tags=TAGS, status=204, auth=AUTH,
              errors=(404, 409))
def remove_member(principal: Principal, project_id: str, user_id: str):
    projects.remove_member(principal, project_id, user_id)
    return None, 204


@bp.operation("/projects/<project_id>/api-keys", summary="Keys restricted to a project (admin)",
              tags=TAGS, query=ListQuery, response=ApiKeyList, auth=AUTH, errors=(404,))
def list_project_keys(principal: Principal, project_id: str, query: ListQuery):
    rows, next_cursor = api_keys.list_project_keys(principal, project_id, query.limit,
                                                   query.cursor)
    return page_body([ApiKeyOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation("/projects/<project_id>/api-keys/<key_id>", "DELETE",
              summary="Revoke a member's key restricted to the project (admin)", tags=TAGS,
              response=ApiKeyOut, auth=AUTH, errors=(404,))
def revoke_project_key(principal: Principal, project_id: str, key_id: str):
    return ApiKeyOut.of(api_keys.revoke_project_key(principal, project_id, key_id))
