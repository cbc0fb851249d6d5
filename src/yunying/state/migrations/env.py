"""Alembic environment: runs migrations on the engine handed over in ``config.attributes``."""

from alembic import context

from yunying.state.models import all_tables

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # invoked from the alembic command line
    from yunying.config import load_settings
    from yunying.state.db import make_engine

    engine = make_engine(load_settings().state_url)

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=all_tables(), render_as_batch=True)
    context.run_migrations()
