"""SQLite storage: `Database` (connection, PRAGMAs, migrations) and `Repository` (every query, keyed by guild)."""

from bot.storage.db import SCHEMA_VERSION, Database
from bot.storage.models import CustomLevel, GuildSettings, SessionRow, SessionSummaryRow, TurnRow
from bot.storage.repository import Repository

__all__ = [
    "SCHEMA_VERSION",
    "CustomLevel",
    "Database",
    "GuildSettings",
    "Repository",
    "SessionRow",
    "SessionSummaryRow",
    "TurnRow",
]
