"""Who may run which command: named decorators over plain, directly testable predicates.

Each decorator applies Discord's `default_permissions` hint (what the server's command picker shows) *and* a
runtime `app_commands.check` (what is enforced), so the two come from one declaration and cannot drift
(RoboDanny's `hybrid_permissions_check`). A failing predicate raises an `app_commands.CheckFailure`
subclass whose message is the sentence the user reads; the tree's error handler sends it ephemerally.

Discord ignores `default_permissions` and `guild_only` on subcommands: a group of commands sets them on
the `app_commands.Group` itself (`guild_only=True, default_permissions=MODERATOR_PERMISSIONS`), and each
subcommand still carries the runtime check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import discord
from discord import app_commands

from bot.participants import STOP_RULE, may_stop
from bot.storage.models import GuildSettings

if TYPE_CHECKING:
    from bot.client import TutorBot

T = TypeVar("T")

MODERATOR_PERMISSIONS = discord.Permissions(manage_guild=True)


class GuildOnly(app_commands.CheckFailure):
    """The command was used in a direct message."""

    def __init__(self) -> None:
        super().__init__("The tutor only works inside a server, not in direct messages.")


class NotModerator(app_commands.CheckFailure):
    """The member has neither Manage Server nor the server's moderator role."""

    def __init__(self) -> None:
        super().__init__("Only this server's moderators (Manage Server, or the moderator role) can do that.")


class NotAllowedToStart(app_commands.CheckFailure):
    """The server limits the tutor to a starter role the member does not have."""

    def __init__(self, role_name: str) -> None:
        self.role_name = role_name
        super().__init__(f"You need the **{role_name}** role to use the tutor here — ask a grown-up if you'd "
                         "like it.")


class NotAllowedToStop(app_commands.CheckFailure):
    """Someone outside the call, not its starter and not a moderator, tried `/tutor stop`."""

    def __init__(self) -> None:
        super().__init__(f"The tutor can be stopped by {STOP_RULE}. Join the call if you want to end it.")


def _member(interaction: discord.Interaction) -> discord.Member:
    """The caller as a guild member; anything else (a DM, a user-installed context) is refused."""
    if interaction.guild is None or not isinstance(interaction.user, discord.Member):
        raise GuildOnly
    return interaction.user


def _manages_guild(member: discord.Member) -> bool:
    """Manage Server; Administrator is spelt out because it is what implies it."""
    permissions = member.guild_permissions
    return permissions.administrator or permissions.manage_guild


def _has_role(member: discord.Member, role_id: int | None) -> bool:
    return role_id is not None and any(role.id == role_id for role in member.roles)


def moderates(member: discord.Member, settings: GuildSettings) -> bool:
    """Manage Server (or Administrator), or the stored moderator role — never `@everyone` (its id is the
    guild's), even if an old setting holds it: that would make every member a moderator."""
    if _manages_guild(member):
        return True
    role_id = settings.moderator_role_id
    return role_id is not None and role_id != member.guild.id and _has_role(member, role_id)


async def require_guild(interaction: discord.Interaction) -> bool:
    """Refuse direct messages with a sentence instead of Discord's generic failure."""
    _member(interaction)
    return True


async def is_moderator(interaction: discord.Interaction[TutorBot]) -> bool:
    """Manage Server (or Administrator) or the guild's configured moderator role."""
    member = _member(interaction)
    if _manages_guild(member):
        return True
    if moderates(member, await interaction.client.repository.get_settings(member.guild.id)):
        return True
    raise NotModerator


async def may_start_tutor(interaction: discord.Interaction[TutorBot]) -> bool:
    """Everyone, unless the guild set a starter role: then that role's members and moderators."""
    member = _member(interaction)
    settings = await interaction.client.repository.get_settings(member.guild.id)
    if settings.starter_role_id is None or _has_role(member, settings.starter_role_id):
        return True
    if moderates(member, settings):
        return True
    role = member.guild.get_role(settings.starter_role_id)
    raise NotAllowedToStart(role.name if role is not None else "tutor starter")


async def may_stop_tutor(interaction: discord.Interaction[TutorBot]) -> bool:
    """`bot.participants.STOP_RULE`; with nothing running the command itself answers "not running"."""
    member = _member(interaction)
    conversation = interaction.client.conversations.get(member.guild.id)
    if conversation is None:
        return True
    channel, starter_id = conversation.voice_channel, conversation.request.starter_id
    if may_stop(member.id, channel=channel, starter_id=starter_id, is_moderator=False):
        return True
    settings = await interaction.client.repository.get_settings(member.guild.id)
    if may_stop(member.id, channel=channel, starter_id=starter_id, is_moderator=moderates(member, settings)):
        return True
    raise NotAllowedToStop


async def is_moderator_quietly(interaction: discord.Interaction[TutorBot]) -> bool:
    """`is_moderator` as a plain yes/no, for showing moderators a little more (and for autocomplete)."""
    try:
        return await is_moderator(interaction)
    except app_commands.CheckFailure:
        return False


def guild_only() -> Callable[[T], T]:
    """Server-only command: hidden from DMs by Discord, and refused with a sentence if one slips through."""

    def decorator(func: T) -> T:
        app_commands.guild_only()(func)
        app_commands.check(require_guild)(func)
        return func

    return decorator


def moderator_only() -> Callable[[T], T]:
    """Moderators only: shown by default to Manage Server, enforced against Manage Server or the moderator role.

    Server admins can let the moderator role *see* the command in Server Settings → Integrations; the
    runtime check already lets it through.
    """

    def decorator(func: T) -> T:
        app_commands.guild_only()(func)
        app_commands.default_permissions(MODERATOR_PERMISSIONS)(func)
        app_commands.check(is_moderator)(func)
        return func

    return decorator


def can_stop_tutor() -> Callable[[T], T]:
    """`STOP_RULE` (bot/participants.py); visible to everyone."""

    def decorator(func: T) -> T:
        app_commands.guild_only()(func)
        app_commands.check(may_stop_tutor)(func)
        return func

    return decorator


def can_start_tutor() -> Callable[[T], T]:
    """Whoever the guild allows to run the tutor; visible to everyone (no default_permissions restriction)."""

    def decorator(func: T) -> T:
        app_commands.guild_only()(func)
        app_commands.check(may_start_tutor)(func)
        return func

    return decorator
