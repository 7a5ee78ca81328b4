"""Storage for kids' chosen names, a server's time zone and its own topics' titles, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.storage.db import Database
from bot.storage.repository import Repository

GUILD, OTHER_GUILD = 100, 200
KID, PARENT = 11, 12
JAN = datetime(2026, 1, 15, 6, 0, tzinfo=UTC)  # 01:00 in New York (UTC-5 in January)


@pytest.fixture
def repo(database: Database) -> Repository:
    return Repository(database)


async def test_chosen_name_set_replaced_cleared_per_guild(repo):
    """A name is kept per guild and member; setting again replaces it; clearing forgets it."""
    await repo.set_member_name(GUILD, KID, "Ana", set_by=KID)
    await repo.set_member_name(OTHER_GUILD, KID, "Annie", set_by=PARENT)
    assert await repo.member_names(GUILD) == {KID: "Ana"}
    await repo.set_member_name(GUILD, KID, "  Ana Maria ", set_by=PARENT)
    assert await repo.member_names(GUILD) == {KID: "Ana Maria"}
    assert await repo.clear_member_name(GUILD, KID) is True
    assert await repo.clear_member_name(GUILD, KID) is False
    assert await repo.member_names(GUILD) == {}
    assert await repo.member_names(OTHER_GUILD) == {KID: "Annie"}


async def test_erasing_a_member_forgets_their_chosen_name(repo):
    """`delete_member_data` removes the chosen name with the member's words (in that guild only)."""
    await repo.set_member_name(GUILD, KID, "Ana", set_by=KID)
    await repo.set_member_name(OTHER_GUILD, KID, "Ana", set_by=KID)
    await repo.delete_member_data(GUILD, KID)
    assert await repo.member_names(GUILD) == {}
    assert await repo.member_names(OTHER_GUILD) == {KID: "Ana"}


async def test_time_zone_is_a_setting_that_is_validated(repo):
    """An IANA name is stored and read back; None clears it; an unknown name is refused and changes nothing."""
    assert (await repo.get_settings(GUILD)).time_zone is None
    assert (await repo.update_settings(GUILD, time_zone="Europe/London")).time_zone == "Europe/London"
    with pytest.raises(ValueError, match="IANA time zone"):
        await repo.update_settings(GUILD, time_zone="Mars/Olympus_Mons")
    assert (await repo.get_settings(GUILD)).time_zone == "Europe/London"
    assert (await repo.update_settings(GUILD, time_zone=None)).time_zone is None


async def test_today_ends_at_midnight_in_the_servers_time_zone(repo):
    """A talk from 23:00 to 01:00 New York time counts 60 minutes "today" there, 120 by UTC's day."""
    session_id = await repo.start_session(GUILD, 5, KID, "Ana", "space", 8, started_at=JAN - timedelta(hours=2))
    await repo.end_session(GUILD, session_id, "stopped", ended_at=JAN)
    assert await repo.minutes_used_today(GUILD, now=JAN) == pytest.approx(120)
    assert await repo.minutes_used_today(GUILD, now=JAN, time_zone="America/New_York") == pytest.approx(60)
    assert await repo.minutes_used_today(GUILD, now=JAN, time_zone="Asia/Tokyo") == pytest.approx(120)


async def test_own_topic_keeps_the_title_the_moderator_typed(repo):
    """The slug stays the key; the title is stored beside it (None for a topic added without one)."""
    assert await repo.add_custom_level(GUILD, "volcano-fun", "Lava and magma.", PARENT, title="Volcano Fun!")
    assert await repo.add_custom_level(GUILD, "rivers", "Where rivers go.", PARENT)
    levels = {level.name: level.title for level in await repo.list_custom_levels(GUILD)}
    assert levels == {"rivers": None, "volcano-fun": "Volcano Fun!"}
