"""Who may run what: the predicates in cogs/utils/checks.py, called directly, and what the decorators attach."""

from __future__ import annotations

import discord
import pytest
from discord import app_commands

from bot.storage.models import GuildSettings
from cogs.utils import checks
from tests.helpers import MockGuild, MockInteraction, MockMember, MockRole, run_checks


def interaction_for(member: MockMember, **settings: int | None) -> MockInteraction:
    """An interaction from `member` in a guild whose stored settings are `settings`."""
    interaction = MockInteraction(user=member)
    interaction.client.repository.get_settings.side_effect = None
    interaction.client.repository.get_settings.return_value = GuildSettings(guild_id=member.guild.id, **settings)
    return interaction


async def test_manage_server_makes_a_moderator() -> None:
    """A member with Manage Server passes without any configured role."""
    member = MockMember(permissions=discord.Permissions(manage_guild=True))
    assert await checks.is_moderator(interaction_for(member)) is True


async def test_administrator_makes_a_moderator() -> None:
    """Administrator implies Manage Server."""
    member = MockMember(permissions=discord.Permissions(administrator=True))
    assert await checks.is_moderator(interaction_for(member)) is True


async def test_configured_moderator_role_makes_a_moderator() -> None:
    """The guild's moderator role is enough, without Manage Server."""
    role = MockRole(name="Parents")
    member = MockMember(roles=[role])
    assert await checks.is_moderator(interaction_for(member, moderator_role_id=role.id)) is True


async def test_other_roles_are_not_moderators() -> None:
    """A member with some other role is refused with the moderator sentence."""
    member = MockMember(roles=[MockRole(name="Kids")])
    with pytest.raises(checks.NotModerator) as refused:
        await checks.is_moderator(interaction_for(member, moderator_role_id=12345))
    assert "moderators" in str(refused.value)
    assert isinstance(refused.value, app_commands.CheckFailure)


async def test_a_stored_everyone_moderator_role_makes_nobody_a_moderator() -> None:
    """@everyone (the role whose id is the guild's) is never a moderator role, even if an old setting holds it."""
    member = MockMember()
    everyone = member.guild.default_role
    member.roles = [everyone]  # discord.py lists @everyone among every member's roles
    with pytest.raises(checks.NotModerator):
        await checks.is_moderator(interaction_for(member, moderator_role_id=everyone.id))
    with pytest.raises(checks.NotAllowedToStart):
        await checks.may_start_tutor(interaction_for(member, starter_role_id=111, moderator_role_id=everyone.id))


async def test_no_role_configured_and_no_permission_is_refused() -> None:
    """Without a moderator role configured only Manage Server counts."""
    with pytest.raises(checks.NotModerator):
        await checks.is_moderator(interaction_for(MockMember()))


async def test_everyone_may_start_when_no_starter_role_is_set() -> None:
    """The default: any member may start the tutor."""
    assert await checks.may_start_tutor(interaction_for(MockMember())) is True


async def test_starter_role_lets_its_members_start() -> None:
    """With a starter role set, members holding it may start."""
    role = MockRole(name="Tutor kids")
    member = MockMember(roles=[role])
    assert await checks.may_start_tutor(interaction_for(member, starter_role_id=role.id)) is True


async def test_starter_role_refuses_others_and_names_the_role() -> None:
    """Members without the starter role are refused with a sentence naming it."""
    role = MockRole(name="Tutor kids")
    member = MockMember(guild=MockGuild(roles=[role]))
    with pytest.raises(checks.NotAllowedToStart) as refused:
        await checks.may_start_tutor(interaction_for(member, starter_role_id=role.id))
    assert "**Tutor kids**" in str(refused.value)


async def test_starter_role_that_was_deleted_still_refuses_clearly() -> None:
    """A starter role id that no longer exists still refuses, with a generic role name."""
    member = MockMember()
    with pytest.raises(checks.NotAllowedToStart, match="tutor starter"):
        await checks.may_start_tutor(interaction_for(member, starter_role_id=999))


@pytest.mark.parametrize("how", ["manage_guild", "moderator_role"])
async def test_moderators_may_start_despite_a_starter_role(how: str) -> None:
    """Moderators (either way) are never locked out by the starter role."""
    mod_role = MockRole(name="Parents")
    member = (MockMember(permissions=discord.Permissions(manage_guild=True)) if how == "manage_guild"
              else MockMember(roles=[mod_role]))
    interaction = interaction_for(member, starter_role_id=111, moderator_role_id=mod_role.id)
    assert await checks.may_start_tutor(interaction) is True


@pytest.mark.parametrize("predicate", [checks.require_guild, checks.is_moderator, checks.may_start_tutor])
async def test_direct_messages_are_refused_with_a_sentence(predicate) -> None:
    """Every predicate refuses a DM (user is a plain User, no guild) with the guild-only sentence."""
    user = discord.Object(id=5)
    interaction = MockInteraction(user=MockMember(), guild=None)
    interaction.user = user
    with pytest.raises(checks.GuildOnly, match="not in direct messages"):
        await predicate(interaction)


def test_moderator_only_sets_the_default_permission_and_the_check() -> None:
    """The decorator attaches both the Manage Server hint and the runtime check, and marks guild-only."""

    @app_commands.command(name="probe", description="probe")
    @checks.moderator_only()
    async def probe(interaction: discord.Interaction) -> None: ...

    assert probe.default_permissions == discord.Permissions(manage_guild=True)
    assert probe.checks == [checks.is_moderator]
    assert probe.guild_only is True


def test_can_start_tutor_adds_the_check_without_hiding_the_command() -> None:
    """Starting is visible to everyone: no default_permissions, only the runtime check."""

    @app_commands.command(name="probe", description="probe")
    @checks.can_start_tutor()
    async def probe(interaction: discord.Interaction) -> None: ...

    assert probe.default_permissions is None
    assert probe.checks == [checks.may_start_tutor]


async def test_decorated_command_runs_its_check() -> None:
    """run_checks on a moderator_only command refuses a non-moderator, as discord.py would."""

    @app_commands.command(name="probe", description="probe")
    @checks.moderator_only()
    async def probe(interaction: discord.Interaction) -> None: ...

    with pytest.raises(checks.NotModerator):
        await run_checks(probe, interaction_for(MockMember()))
