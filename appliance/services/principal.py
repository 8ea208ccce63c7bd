"""The acting principal: who a service acts for, and with what rights.

Every service that acts for someone takes a `Principal`: the user, how they came
(a browser session, an API access token, an API key), the key's scopes and project
restriction, and the client's address for the audit log. The views resolve it from the
request (api/principal.py, web/session.py); services check roles and scopes on it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from appliance.errors import Forbidden
from appliance.models import User


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user, through a session (browser or API token) or an API key.

    A key acts as its owner limited by its `scopes` and, when restricted, by its project;
    the owner's current roles are checked by the services as for any other caller.
    """

    user: User
    session_id: str | None
    via: str  # session | token | api_key
    scopes: frozenset[str] | None = None  # None: everything the user's roles allow
    key_id: str | None = None
    project_id: str | None = None  # a key restricted to one project
    ip: str = ""  # the client's address, set by the view that resolved the caller (audit)
    # An administrator acting on someone else's resources through the admin routes; set
    # only by `as_operator`, after the administrator was checked.
    operator: bool = False

    @property
    def is_admin(self) -> bool:
        """An administrator acting with administrator rights (a key needs the admin scope)."""
        return self.user.role == "admin" and self.allows("admin")

    def as_operator(self) -> Principal:
        """The same caller acting as the operator: `projects.access` lets it into any live
        project as a member (it can operate instances, not manage the project). Only the
        admin services call this, after `require_admin`; the customer routes never do, so
        there an administrator is an outsider like anyone else (404)."""
        if not self.is_admin:
            raise Forbidden("This needs an administrator.", code="admin_only")
        return replace(self, operator=True)

    def allows(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    def require_scope(self, scope: str) -> None:
        """403 `scope_denied`, naming the scope, when a key lacks it."""
        if not self.allows(scope):
            raise Forbidden(f"This API key lacks the scope {scope}.", code="scope_denied",
                            details={"scope": scope})
