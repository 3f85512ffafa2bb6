"""The project the tests run: its folder, its revisions, the database servers
the tests also use, and its alembic command."""

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

PROJECT = Path(__file__).resolve().parent.parent

# The project's revisions, from the first to the head.
REVISIONS = list(
    reversed(list(ScriptDirectory.from_config(Config(PROJECT / "alembic.ini")).walk_revisions()))
)
CREATE_USERS, ADD_AUTHOR, ADD_SESSIONS = (revision.revision for revision in REVISIONS)

# Database servers the tests also run on, when these variables give their URLs.
SERVER_URL_VARIABLES = {
    "postgresql": "BLOG_TEST_POSTGRES_URL",
    "mysql": "BLOG_TEST_MYSQL_URL",
}


def alembic(runner, project, *args, **kwargs):
    """`alembic -c project/alembic.ini ARGS`, typed from a folder outside the project."""
    return runner("-m", "alembic", "-c", project / "alembic.ini", *args, **kwargs)
