"""The SQLite store: every table and transaction. Nothing here calls HTTP."""
