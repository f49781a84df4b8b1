"""Storage: one async SQLAlchemy engine (SQLite or PostgreSQL) and small repositories.

Modules never write raw SQL; they use a repository from this package.
"""

from .accounts import AccountRow, Accounts
from .engine import create_engine, create_schema, metadata

__all__ = ["AccountRow", "Accounts", "create_engine", "create_schema", "metadata"]
