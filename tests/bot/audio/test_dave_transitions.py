"""Every change in a DAVE call, with kids talking through it: not one frame lost, garbled or decoded encrypted.

Each test drives a real call (real davey sessions for every party, discord.py's own handlers for ops 21–31,
voice-recv over loopback UDP) and has the talkers speak between every protocol step, so frames land in each
window where one could be lost: proposals out, kids already committed but not the bot, commit in, welcome, execute.
`switch_at` covers both kinds of senders: "execute" switch keys at op 22 as the whitepaper says; "commit" switch as
soon as their own MLS state moved, so their new-epoch frames can reach the bot before its own commit does.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from bot.audio.dave import OPUS_SILENCE, DaveVoiceRecvClient, has_dave_trailer
from tests.dave_harness import (
    APPEND,
    CHANNEL_ID,
    SPEAKER_SSRC,
    Between,
    Loss,
    Recorder,
    RemoteUser,
    VoiceServerHarness,
    frames_lost,
    reference_decode,
    voice_of,
)

FRAMES_PER_STEP = 2
SWITCHES = ["execute", "commit"]


@pytest.fixture
async def call(request):
    """A call with `request.param` = (parties, switch_at), listening into a Recorder."""
    parties, switch_at = request.param
    h = await VoiceServerHarness.start(parties=parties, switch_at=switch_at)
    h.recorder = Recorder()
    h.vc.listen(h.recorder.sink())
    yield h
    await h.close()


def talking(h: VoiceServerHarness, kids: Callable[[], list[RemoteUser]]) -> Between:
    """A `between` that has `kids()` say FRAMES_PER_STEP frames after every protocol step."""
    async def between(_step: str) -> None:
        await h.speak(kids(), FRAMES_PER_STEP)
    return between


async def finish(h: VoiceServerHarness, kids: list[RemoteUser]) -> dict[int, Loss]:
    """Trailing speech, wait for delivery, and each kid's loss (what the closing note reports per transition)."""
    await h.speak(kids, 3)
    last = {kid.ssrc: max(kid.sent) - 1 for kid in kids}
    await h.wait_until(lambda: all(
        any(f.sequence >= last[kid.ssrc] for f in h.recorder.of(kid.ssrc)) for kid in kids), within=3.0)
    return {kid.user_id: frames_lost(kid, h.recorder) for kid in kids}


def assert_nothing_lost(h: VoiceServerHarness, losses: dict[int, Loss]) -> None:
    """0 lost, 0 garbled, nothing encrypted reached Opus, and every kid's audio is bit-exact from the first frame."""
    report = {uid: (loss.sent, loss.lost, loss.garbled) for uid, loss in losses.items()}
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split(" ")[0]
    print(f"frames lost per kid (sent, lost, garbled) in {test}: {report}")  # shown with pytest -s
    assert all(loss.total == 0 for loss in losses.values()), f"frames lost per kid (sent, lost, garbled): {report}"
    vc: DaveVoiceRecvClient = h.vc
    assert vc.receive_stats.opus_errors == 0
    for kid in h.parties:
        if kid.user_id in losses:
            got = h.recorder.of(kid.ssrc)
            assert [f.pcm for f in got] == reference_decode(kid.sent_in_order())[: len(got)]


@pytest.mark.parametrize("call", [(2, s) for s in SWITCHES], indirect=True, ids=SWITCHES)
async def test_a_third_kid_joins_without_a_lost_frame(call):
    """Two kids talk through a third kid's join (op 11 → 27 → 29/30 → 22); then all three are heard exactly."""
    h = call
    talkers = list(h.parties)
    await h.speak(talkers, 3)
    kid = await h.join(333, 3003, between=talking(h, lambda: talkers))
    await h.speak(h.parties, 4)
    losses = await finish(h, h.parties)
    assert_nothing_lost(h, losses)
    assert len(h.recorder.of(kid.ssrc)) >= 5 and h.recorder.of(kid.ssrc)[0].user.id == 333


@pytest.mark.parametrize("call", [(3, s) for s in SWITCHES], indirect=True, ids=SWITCHES)
async def test_a_kid_leaves_without_the_others_losing_a_frame(call):
    """The remaining kids talk through a leave (op 13 → 27 remove → 29 → 22) and lose nothing."""
    h = call
    leaving = h.parties[-1]
    await h.speak(h.parties, 3)
    await h.leave(leaving, between=talking(h, lambda: h.parties))
    losses = await finish(h, h.parties)
    assert_nothing_lost(h, losses)
    assert leaving.user_id not in {int(uid) for uid in h.vc._connection.dave_session.get_user_ids()}


@pytest.mark.parametrize("call", [(2, s) for s in SWITCHES], indirect=True, ids=SWITCHES)
async def test_downgrade_decrypts_frames_still_in_flight(call):
    """Frames DAVE-encrypted before op 22 but arriving after it are decrypted, never fed to Opus encrypted."""
    h = call
    in_flight: list[bytes] = []

    async def between(step: str) -> None:
        if step == "prepared":  # built (encrypted, or plain for early switchers) before the execute ...
            in_flight.extend(d for kid in h.parties for d in kid.speak(3))
        elif step == "executed":  # ... delivered after it, then plain speech
            await h.send_paced(in_flight)
            await h.speak(h.parties, FRAMES_PER_STEP)

    await h.speak(h.parties, 3)
    await h.downgrade(between=between)
    assert h.vc._connection.dave_protocol_version == 0
    losses = await finish(h, h.parties)
    assert_nothing_lost(h, losses)


@pytest.mark.parametrize("call", [(2, s) for s in SWITCHES], indirect=True, ids=SWITCHES)
async def test_upgrade_passes_plain_frames_until_the_execute(call):
    """Back to DAVE (op 24 → new group → op 22): plain frames pass until the execute, DAVE frames after it."""
    h = call
    await h.downgrade()
    await h.speak(h.parties, 3)
    await h.upgrade(between=talking(h, lambda: h.parties))
    assert h.vc._connection.can_encrypt and not h.vc._connection.dave_downgraded
    losses = await finish(h, h.parties)
    assert_nothing_lost(h, losses)


@pytest.mark.parametrize("call", [(2, s) for s in SWITCHES], indirect=True, ids=SWITCHES)
async def test_late_frames_from_the_previous_epoch_still_decrypt(call):
    """Old-epoch frames held up on the way (UDP slower than the websocket) arrive after op 22 and still decrypt."""
    h = call
    talkers = list(h.parties)
    late: list[bytes] = []

    async def between(step: str) -> None:
        if step in ("proposed", "committed"):
            late.extend(d for kid in talkers for d in kid.speak(2))  # old epoch for whitepaper senders
        elif step == "executed":
            await h.send_paced(late)
            await h.speak(talkers, FRAMES_PER_STEP)

    await h.speak(talkers, 3)
    await h.join(333, 3003, between=between)
    losses = await finish(h, talkers)
    assert_nothing_lost(h, losses)


def test_dave_frames_are_told_from_plain_opus_by_their_trailer(harness):
    """Real DAVE frames have the trailer; plain Opus, silence and a plain frame merely ending in FA FA do not."""
    opus = voice_of(440.0)[:20]
    assert all(has_dave_trailer(harness.speaker.session.encrypt_opus(f)) for f in opus)
    assert not any(has_dave_trailer(f) for f in opus)
    assert not has_dave_trailer(OPUS_SILENCE)
    assert not has_dave_trailer(opus[0] + b"\xfa\xfa")  # marker without a consistent size byte and nonce
    assert not has_dave_trailer(opus[0][:-3] + bytes([12]) + b"\xfa\xfa")  # size byte, but the nonce runs on


async def test_a_frame_whose_key_never_comes_is_concealed_after_the_hold(harness):
    """New-epoch frames while the bot awaits its commit wait HOLD_SECONDS, then come out concealed, in order."""
    h = harness
    recorder = Recorder()
    h.vc.listen(recorder.sink())
    await h.speak([h.speaker], 3)
    newcomer = h._new_session(999)
    proposals = h.external_sender.proposals_payload(
        h.external_sender.add_proposal(newcomer.get_serialized_key_package(), CHANNEL_ID, h._epoch()))
    await h.binary(27, bytes([0]) + proposals)  # the bot commits and now awaits the server's answer ...
    h.speaker.session.process_commit(h.speaker.session.process_proposals(APPEND, proposals).commit)
    await h.speak([h.speaker], 2)  # ... which never comes, while the kid already speaks in the new epoch
    stats = h.vc.receive_stats
    assert await h.wait_until(lambda: stats.concealed == 2 and len(recorder.of(SPEAKER_SSRC)) >= 4, within=2.0)
    assert stats.held == 2
    got = recorder.of(SPEAKER_SSRC)  # the fifth frame usually waits in voice-recv's jitter buffer
    assert [f.sequence - 100 for f in got] == list(range(len(got)))
    assert [f.opus is None for f in got[3:]] == [True] * (len(got) - 3) and got[2].opus is not None
