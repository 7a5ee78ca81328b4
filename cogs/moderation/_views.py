"""The confirm-before-deleting view: only the moderator who asked can press it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import discord

log = logging.getLogger(__name__)

NOT_YOURS = "Only the moderator who asked can confirm or cancel this."
CANCELLED = "Cancelled: nothing was deleted."
TIMED_OUT = "Timed out: nothing was deleted."


class ConfirmView(discord.ui.View):
    """Delete / Cancel. `action` runs on Delete and returns the sentence that replaces the question."""

    def __init__(self, *, owner_id: int, action: Callable[[], Awaitable[str]], timeout: float = 60.0) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id
        self.action = action
        self.message: discord.InteractionMessage | discord.WebhookMessage | None = None
        self.confirmed: bool | None = None  # None until pressed (or timed out)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Only the invoker; everyone else is told so, privately."""
        if interaction.user.id == self.owner_id:
            return True
        await interaction.response.send_message(NOT_YOURS, ephemeral=True)
        return False

    def _finish(self, confirmed: bool) -> bool:
        """Record the answer once; a second press (double click) does nothing."""
        if self.confirmed is not None:
            return False
        self.confirmed = confirmed
        self.stop()
        return True

    @discord.ui.button(label="Delete", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        if not self._finish(True):
            return
        result = await self.action()
        await interaction.response.edit_message(content=result, view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        if self._finish(False):
            await interaction.response.edit_message(content=CANCELLED, view=None)

    async def on_timeout(self) -> None:
        """Nothing happens without a press; say so and remove the buttons."""
        if self.confirmed is not None:
            return
        self.confirmed = False
        if self.message is not None:
            try:
                await self.message.edit(content=TIMED_OUT, view=None)
            except discord.HTTPException:
                log.debug("confirm.timeout_edit_failed")

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        log.exception("confirm.error", exc_info=error, extra={"guild_id": interaction.guild_id})
        text = "Sorry, that failed. Check with `/transcripts list` what is still there."
        send = interaction.followup.send if interaction.response.is_done() else interaction.response.send_message
        await send(text, ephemeral=True)
