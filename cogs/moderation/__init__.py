"""Moderator commands: `/transcripts …` and `/tutor-settings …`, plus alerts, summaries and retention."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.client import TutorBot


async def setup(bot: TutorBot) -> None:
    """Extension entry point (`cogs.moderation`)."""
    from cogs.moderation._settings import TutorSettings
    from cogs.moderation._transcripts import Transcripts

    await bot.add_cog(Transcripts(bot))
    await bot.add_cog(TutorSettings(bot))
