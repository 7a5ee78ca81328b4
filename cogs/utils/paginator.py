"""A button paginator for a list of embeds.

Only the person who ran the command can turn pages (others get an ephemeral refusal); when the
view times out the buttons are disabled in place so the message never shows dead controls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import discord

log = logging.getLogger(__name__)

NOT_YOURS = "Only the person who ran this command can turn these pages."


class Paginator(discord.ui.View):
    """First / previous / counter / next / last over fixed pages."""

    def __init__(self, pages: Sequence[discord.Embed], *, owner_id: int, timeout: float = 300.0) -> None:
        if not pages:
            raise ValueError("a paginator needs at least one page")
        super().__init__(timeout=timeout)
        self.pages = list(pages)
        self.owner_id = owner_id
        self.index = 0
        self.message: discord.Message | discord.InteractionMessage | discord.WebhookMessage | None = None
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        """Grey out the buttons that would go nowhere and refresh the counter."""
        last = len(self.pages) - 1
        self.first_page.disabled = self.previous_page.disabled = self.index == 0
        self.next_page.disabled = self.last_page.disabled = self.index == last
        self.counter.label = f"{self.index + 1}/{len(self.pages)}"

    async def send(self, interaction: discord.Interaction, *, ephemeral: bool = True) -> None:
        """Show page one; a single page is sent without buttons (and the view stops at once)."""
        view = self if len(self.pages) > 1 else discord.utils.MISSING
        if interaction.response.is_done():
            self.message = await interaction.followup.send(
                embed=self.pages[0], view=view, ephemeral=ephemeral, wait=True)
        else:
            await interaction.response.send_message(embed=self.pages[0], view=view, ephemeral=ephemeral)
            self.message = await interaction.original_response()
        if len(self.pages) == 1:
            self.stop()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Only the invoker may page."""
        if interaction.user.id == self.owner_id:
            return True
        await interaction.response.send_message(NOT_YOURS, ephemeral=True)
        return False

    async def on_timeout(self) -> None:
        """Leave the page visible but disable every button."""
        for item in self.children:
            if isinstance(item, discord.ui.Button):
                item.disabled = True
        if self.message is not None:
            try:
                await self.message.edit(view=self)
            except discord.HTTPException:
                log.debug("paginator.timeout_edit_failed")

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        """Say sorry ephemerally and log; never leave the click unanswered."""
        log.exception("paginator.error", exc_info=error)
        send = interaction.followup.send if interaction.response.is_done() else interaction.response.send_message
        await send("Sorry, something went wrong turning the page.", ephemeral=True)

    async def show(self, interaction: discord.Interaction, index: int) -> None:
        """Jump to page `index` (clamped) and redraw."""
        self.index = max(0, min(index, len(self.pages) - 1))
        self._sync_buttons()
        await interaction.response.edit_message(embed=self.pages[self.index], view=self)

    @discord.ui.button(label="«", style=discord.ButtonStyle.secondary)
    async def first_page(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.show(interaction, 0)

    @discord.ui.button(label="‹", style=discord.ButtonStyle.primary)
    async def previous_page(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.show(interaction, self.index - 1)

    @discord.ui.button(label="1/1", style=discord.ButtonStyle.secondary, disabled=True)
    async def counter(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.defer()

    @discord.ui.button(label="›", style=discord.ButtonStyle.primary)
    async def next_page(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.show(interaction, self.index + 1)

    @discord.ui.button(label="»", style=discord.ButtonStyle.secondary)
    async def last_page(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.show(interaction, len(self.pages) - 1)
