"""A module that fails while it is imported."""

raise RuntimeError("database URL missing\nset DATABASE_URL")
