"""The task database's alembic revisions, one file each, oldest first (a package, so the
files ship with an installed orchestration)."""
