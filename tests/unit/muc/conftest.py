from tests.pg import db_engine, pg_schema  # noqa: F401  (fixtures)
