"""Operational state (SQLite by default, PostgreSQL at scale), schema managed by Alembic."""

from yunying.state.db import make_engine, open_state, upgrade
from yunying.state.projects import (
    InvalidProject,
    NewProject,
    Project,
    create_project,
    get_project,
    list_projects,
    project_by_secret_key,
    project_by_write_key,
    update_project,
)

__all__ = [
    "InvalidProject",
    "NewProject",
    "Project",
    "create_project",
    "get_project",
    "list_projects",
    "make_engine",
    "open_state",
    "project_by_secret_key",
    "project_by_write_key",
    "update_project",
    "upgrade",
]
