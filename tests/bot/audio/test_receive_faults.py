"""Hostile input and dead listeners: the receive path survives, counts what it dropped, and can be restarted."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest
from discord.ext import voice_recv

from tests.dave_harness import (
    INVALID_OPUS,
    SPEAKER_SSRC,
    Recorder,
    RemoteUser,
    VoiceServerHarness,
    encode_opus,
    garbage_datagram,
    reference_decode,
    sine_frames,
    truncated_datagram,
)

ROUNDS = 500  # each round: 1 good frame + 20 malformed datagrams → 10,000 malformed in all
ROUNDS_PER_BURST = 3  # keeps every stream's jitter buffer (10 packets) from overflowing while threads catch up
NOISY_SSRC, OUTSIDER_ID, OUTSIDER_SSRC, STRANGER_SSRC = 2003, 444, 4004, 5005

# what one round sends, by kind; shuffled per round, each stream keeps its own order
ROUND_SLOTS = (["good", "noisy"] + ["outsider"] * 3 + ["truncated"] * 4 + ["transport_garbage"] * 4
               + ["bad_padding"] * 4 + ["unknown_ssrc"] * 4)


def datagram_makers(h: VoiceServerHarness, good_opus: Iterator[bytes], filler: bytes) -> dict[str, Callable[[], bytes]]:
    """One factory per kind of datagram in a round."""
    noisy = h.parties[1]  # a second kid in the group (SSRC 2003)
    outsider = h.add_remote_user(OUTSIDER_ID, OUTSIDER_SSRC)  # a member the DAVE group never added
    stranger = RemoteUser(999, STRANGER_SSRC, h.transport_key, session=h.speaker.session)
    noisy_turn = iter(range(10**9))

    def noisy_frame() -> bytes:  # alternately: DAVE-tampered (→ concealed) and valid DAVE around invalid Opus
        return noisy.tampered(filler) if next(noisy_turn) % 2 == 0 else noisy.frame(INVALID_OPUS)

    return {
        "good": lambda: h.speaker.frame(next(good_opus)),
        "noisy": noisy_frame,
        "outsider": lambda: outsider.frame(filler),
        "truncated": truncated_datagram,
        "transport_garbage": lambda: garbage_datagram(SPEAKER_SSRC),
        "bad_padding": lambda: h.speaker.bad_padding(filler),
        "unknown_ssrc": lambda: stranger.frame(filler),
    }


@pytest.fixture
async def two_kids():
    """A call with two kids in the DAVE group: the speaker and a noisy one."""
    h = await VoiceServerHarness.start(parties=2)
    assert h.parties[1].ssrc == NOISY_SSRC
    yield h
    await h.close()


async def test_ten_thousand_malformed_packets_leave_good_audio_intact(two_kids):
    """10,000 malformed datagrams among 500 good frames: listener alive, good audio bit-exact, every packet counted."""
    harness = two_kids
    await harness.map_ssrc(OUTSIDER_ID, OUTSIDER_SSRC)
    good_opus = encode_opus(sine_frames(ROUNDS))
    filler = encode_opus(sine_frames(1, freq=300.0))[0]
    make = datagram_makers(harness, iter(good_opus), filler)
    rng = random.Random(7)
    recorder = Recorder()
    vc = harness.vc
    vc.listen(recorder.sink())
    stats = vc.receive_stats

    sent = 0
    for first_round in range(0, ROUNDS, ROUNDS_PER_BURST):
        rounds = min(ROUNDS_PER_BURST, ROUNDS - first_round)
        burst = []
        for _ in range(rounds):
            slots = list(ROUND_SLOTS)
            rng.shuffle(slots)
            burst += [make[kind]() for kind in slots]
        sent += harness.send(burst)
        good_sent = first_round + rounds
        assert await harness.wait_until(
            lambda: stats.packets_received == sent  # noqa: B023 - evaluated before the loop moves on
            and len(recorder.of(SPEAKER_SSRC)) >= good_sent - 1  # noqa: B023
            and len(recorder.of(OUTSIDER_SSRC)) >= 3 * good_sent - 1  # noqa: B023
            and len(recorder.of(NOISY_SSRC)) >= good_sent - 1  # noqa: B023
        ), f"receive stalled after {sent} datagrams: {stats.snapshot()}"

    assert vc.listener_alive()
    good = recorder.of(SPEAKER_SSRC)  # the last frame usually waits in the jitter buffer for a successor
    assert len(good) in (ROUNDS - 1, ROUNDS)
    assert [f.sequence - 100 for f in good] == list(range(len(good)))
    assert [f.pcm for f in good] == reference_decode(good_opus)[: len(good)]

    halves = ROUNDS // 2
    await harness.settled(sent)
    assert stats.packets_received == sent == ROUNDS * len(ROUND_SLOTS)
    assert stats.decrypted == ROUNDS + halves  # good frames + the invalid-Opus frames (valid DAVE)
    assert stats.concealed == halves + 3 * ROUNDS  # tampered + the outsider's frames
    assert stats.dropped_malformed == 12 * ROUNDS  # truncated + transport garbage + bad padding
    assert stats.dropped_unknown_ssrc == 4 * ROUNDS
    assert halves - 1 <= stats.opus_errors <= halves  # the stream's last frame may still wait in the buffer
    assert stats.passed_silence == stats.passed_plain == 0
    assert not stats.all_failing_for(0.5)  # the good frames keep succeeding


async def test_listen_again_after_a_sink_exception(harness):
    """A non-TutorSink raising in write() kills the reader (after() gets the error); listen() again resumes audio."""
    opus = encode_opus(sine_frames(16))
    vc = harness.vc
    stopped: list[Exception | None] = []

    def explode(_user: object, _data: voice_recv.VoiceData) -> None:
        raise RuntimeError("sink bug")

    vc.listen(voice_recv.BasicSink(explode), after=stopped.append)
    await harness.send_paced(harness.speaker.frame(f) for f in opus[:4])
    assert await harness.wait_until(lambda: bool(stopped) and not vc.listener_alive())
    assert isinstance(stopped[0], RuntimeError)

    recorder = Recorder()
    vc.listen(recorder.sink())
    assert vc.listener_alive()
    await harness.send_paced(harness.speaker.frame(f) for f in opus[4:])
    assert await harness.wait_until(lambda: len(recorder.of(SPEAKER_SSRC)) >= 11)
    got = recorder.of(SPEAKER_SSRC)
    first = got[0].sequence - 100  # datagrams the dead reader left in the socket buffer are read by the new one
    assert first <= 4 and [f.sequence - 100 for f in got] == list(range(first, first + len(got)))
    assert [f.pcm for f in got] == reference_decode(opus[first:])[: len(got)]  # a fresh decoder from there on


async def test_listen_again_after_stop_listening(harness):
    """stop_listening() makes listener_alive() False; a new listen() hears the speaker again."""
    opus = encode_opus(sine_frames(12))
    vc = harness.vc
    vc.listen(Recorder().sink())
    vc.stop_listening()
    assert not vc.listener_alive()

    recorder = Recorder()
    vc.listen(recorder.sink())
    await harness.send_paced(harness.speaker.frame(f) for f in opus)
    assert await harness.wait_until(lambda: len(recorder.of(SPEAKER_SSRC)) >= 11)
    assert vc.listener_alive()


async def test_invalid_opus_becomes_silence_not_a_dead_router(harness):
    """A frame that decrypts but is not valid Opus is counted and replaced by silence; the stream continues."""
    opus = encode_opus(sine_frames(8))
    recorder = Recorder()
    harness.vc.listen(recorder.sink())
    datagrams = [harness.speaker.frame(INVALID_OPUS if i == 3 else f) for i, f in enumerate(opus)]
    await harness.send_paced(datagrams)
    assert await harness.wait_until(lambda: len(recorder.of(SPEAKER_SSRC)) >= 7)
    got = recorder.of(SPEAKER_SSRC)
    assert got[3].pcm == bytes(3840)
    assert harness.vc.receive_stats.opus_errors == 1 and harness.vc.listener_alive()
