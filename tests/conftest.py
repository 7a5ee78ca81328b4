"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest

from bot.storage import Database, Repository


@pytest.fixture
async def repository(tmp_path):
    """A Repository on a fresh SQLite file (real file: WAL and locking behave as in production)."""
    db = await Database.open(tmp_path / "tutor.sqlite3")
    yield Repository(db)
    await db.close()
