"""`/tutor-settings turn-pause`: how long a pause ends a child's turn, per server."""

from __future__ import annotations

import pytest

from tests.cogs.test_moderation import bot, command, db, genai_server, guild, moderator, settings_cog, tree
from tests.helpers import call_command, invoke, reply_of

__all__ = ["bot", "db", "genai_server", "guild", "settings_cog", "tree"]  # shared fixtures


async def test_turn_pause_is_set_in_seconds_shown_and_reset(bot, guild, settings_cog):
    """`turn-pause seconds:0.9` stores 900 ms and says under-7s get 1.4 s; no value goes back to the default."""
    interaction = moderator(bot, guild)
    await call_command(command(settings_cog, "turn-pause"), settings_cog, interaction, seconds=0.9)
    assert (await bot.repository.get_settings(guild.id)).turn_pause_ms == 900
    assert "0.9 s (1.4 s for children under 7)" in reply_of(interaction).content
    interaction = moderator(bot, guild)
    await call_command(command(settings_cog, "show"), settings_cog, interaction)
    fields = {f.name: f.value for f in reply_of(interaction).embed.fields}
    assert fields["Pause that ends a child's turn"] == "0.9 s (1.4 s for children under 7)"
    interaction = moderator(bot, guild)
    await call_command(command(settings_cog, "turn-pause"), settings_cog, interaction)
    assert (await bot.repository.get_settings(guild.id)).turn_pause_ms is None
    assert "1.2 s (1.7 s for children under 7), the default" in reply_of(interaction).content


@pytest.mark.parametrize("seconds", [0.2, 3.5, -1.0])
async def test_out_of_range_turn_pause_changes_nothing(bot, guild, settings_cog, tree, seconds):
    """Outside 0.5–3 s the reply names the range in seconds and nothing changes."""
    before = await bot.repository.get_settings(guild.id)
    reply = await invoke(tree, command(settings_cog, "turn-pause"), settings_cog, moderator(bot, guild),
                         seconds=seconds)
    assert reply.ephemeral and "between 0.5 and 3 seconds" in reply.content and "Nothing was changed" in reply.content
    assert await bot.repository.get_settings(guild.id) == before
