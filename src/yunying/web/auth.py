"""Who is calling the management API: a project's secret key, or this machine's admin token.

Every management router (SQL, analytics, audience, activities, ...) authenticates the same way:
``Authorization: Bearer <secret_key>`` names one project, and a body or query ``project`` that
names another is a 403; the local admin token (``DATA_DIR/admin_token``, what the CLI uses) may
reach any project and needs ``project`` only when the installation has several.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from yunying.errors import NotFound
from yunying.runtime import Runtime, ensure_admin_token
from yunying.state import Project, get_project, project_by_secret_key
from yunying.web.http import HTTPProblem, bearer


class ManagementAuth:
    """Resolves the caller of a management endpoint to a project (401/403/404 otherwise)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.admin_token = ensure_admin_token(runtime.settings.admin_token_file)

    def principal(self, request: Request) -> Project | None:
        """The project a secret key belongs to, or None for the local admin token (401 else)."""
        token = bearer(request)
        if token is None:
            raise HTTPProblem(401, "missing secret key: send 'Authorization: Bearer <secret_key>'")
        if hmac.compare_digest(token, self.admin_token):
            return None
        project = project_by_secret_key(self.runtime.state, token)
        if project is None:
            raise HTTPProblem(401, "unknown secret key")
        return project

    def project_for(self, who: Project | None, name: str | None) -> Project:
        """The project ``name`` as seen by ``who`` (see :meth:`principal`)."""
        if who is None:
            try:
                return get_project(self.runtime.state, name)
            except NotFound as exc:
                raise HTTPProblem(404, str(exc)) from None
        if name is not None and name != who.name:
            raise HTTPProblem(403, f"this secret key belongs to project {who.name!r}")
        return who

    def project(self, request: Request, name: str | None) -> Project:
        """Authenticate ``request`` and resolve the project it asks for."""
        return self.project_for(self.principal(request), name)
