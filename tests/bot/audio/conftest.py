"""Fixtures for the receive-path tests."""

from __future__ import annotations

import pytest

from tests.dave_harness import VoiceServerHarness


@pytest.fixture
async def harness():
    """A real DaveVoiceRecvClient in a local DAVE call with one remote speaker over loopback UDP."""
    h = await VoiceServerHarness.start()
    yield h
    await h.close()
