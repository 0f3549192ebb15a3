"""How alembic runs the task database's revisions: on the connection `ensure_schema` hands it,
inside that connection's transaction, with our own version table."""

from alembic import context

from orchestration.tasks.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "the task database's revisions run through "
        "orchestration.tasks.migrations.ensure_schema, which passes the connection; the alembic "
        "command line and offline (--sql) mode are not supported"
    )
context.configure(connection=connection, version_table=VERSION_TABLE)
with context.begin_transaction():  # a no-op: the connection is already in ensure_schema's
    context.run_migrations()
