"""Storage: `Database` (SQLite or PostgreSQL: connection, transactions, retries, migrations) and `Repository`
(every query, keyed by guild). `Database.open(location)` picks the backend from the location."""

from bot.storage.db import SCHEMA_VERSION, Database, IntegrityError
from bot.storage.models import CustomLevel, GuildSettings, SessionRow, SessionSummaryRow, TurnRow
from bot.storage.repository import Repository

__all__ = [
    "SCHEMA_VERSION",
    "CustomLevel",
    "Database",
    "GuildSettings",
    "IntegrityError",
    "Repository",
    "SessionRow",
    "SessionSummaryRow",
    "TurnRow",
]
