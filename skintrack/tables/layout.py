"""The names of a study folder's parts, in a module light enough for the command line to read a study's
catalog without loading DuckDB (`skintrack.kept`).

Example
-------
>>> CATALOG, DATA, PLAN
('lake.sqlite', 'lake', 'plan.toml')
"""
CATALOG = "lake.sqlite"  # the local catalog (SQLite)
DATA = "lake"  # the data files
CONFIG = "store.toml"  # a shared catalog's address, when the study has one
PLAN = "plan.toml"  # the study plan as the user edits it
