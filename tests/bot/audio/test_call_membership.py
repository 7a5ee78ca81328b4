"""Kids come and go mid-call, four at a time: each newcomer is heard within the transition that adds them, under
their own name and resampler stream; a kid who leaves takes their decoder, decryptor, resampler and mixer state
along; a kid who comes back starts from a clean stream.

Real pieces throughout: davey sessions for every kid, discord.py's voice websocket handlers, voice-recv over
loopback UDP with the shim, the real TutorSink (soxr) and Mixer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import numpy as np
import pytest

from bot.audio.convert import Downsampler
from bot.audio.mixer import Mixer
from bot.audio.sink import TutorSink
from tests.dave_harness import BOT_ID, RemoteUser, VoiceServerHarness, reference_decode


class Ears:
    """What the conversation would get from the TutorSink: 16 kHz chunks and names per kid, and who left."""

    def __init__(self) -> None:
        self.mixer = Mixer()
        self.chunks: dict[int, list[bytes]] = defaultdict(list)
        self.names: dict[int, set[str]] = defaultdict(set)
        self.left: list[int] = []

    def on_audio(self, user_id: int, name: str, pcm16k: bytes, at: float) -> None:
        self.chunks[user_id].append(pcm16k)
        self.names[user_id].add(name)
        self.mixer.push(user_id, pcm16k, at)

    def on_left(self, user_id: int) -> None:
        self.left.append(user_id)
        self.mixer.remove(user_id)


@pytest.fixture
async def call():
    h = await VoiceServerHarness.start(parties=2)
    h.ears = Ears()
    h.sink = TutorSink(asyncio.get_running_loop(), h.ears.on_audio, on_left=h.ears.on_left)
    h.vc.listen(h.sink)
    yield h
    await h.close()


async def heard_all_but_the_last(h: VoiceServerHarness, kids: list[RemoteUser], since: dict[int, int]) -> bool:
    """Every kid's frames since `since[user_id]` reached the sink (the newest waits in the jitter buffer)."""
    return await h.wait_until(lambda: all(
        h.sink.frames_in[kid.user_id] - since.get(kid.user_id, 0) >= len(kid.sent) - 1 for kid in kids), within=3.0)


async def test_four_kids_come_and_go_and_each_is_heard_on_a_stream_of_their_own(call):
    """Kids 3 and 4 join mid-call, all four talk; kid 3 leaves (state freed) and comes back on a fresh stream."""
    h, ears = call, call.ears

    async def everyone_talks(_step: str) -> None:
        await h.speak(h.parties, 2)

    await h.speak(h.parties, 3)
    third = await h.join(333, 3003, between=everyone_talks)
    await h.speak([third], 5)
    assert await heard_all_but_the_last(h, [third], {}), "the third kid was not heard after their join"
    await h.join(444, 4004, between=everyone_talks)
    await h.speak(h.parties, 4)
    assert await heard_all_but_the_last(h, h.parties, {})
    assert dict(ears.names) == {
        uid: {f"Kid {uid}"} for uid in (222, 223, 333, 444)}
    assert set(h.sink._downsamplers) == {222, 223, 333, 444}  # one resampler stream each
    assert set(ears.mixer._speakers) == {222, 223, 333, 444}
    assert {int(u) for u in h.vc._connection.dave_session.get_user_ids()} == {BOT_ID, 222, 223, 333, 444}

    router = h.vc._reader.packet_router
    first_decoder = router.decoders[third.ssrc]
    await h.leave(third, between=everyone_talks)
    assert await h.wait_until(lambda: ears.left == [333])
    assert third.ssrc not in router.decoders
    assert 333 not in h.sink._downsamplers and 333 not in ears.mixer._speakers
    session = h.vc._connection.dave_session
    assert 333 not in {int(u) for u in session.get_user_ids()}
    with pytest.raises(ValueError):
        session.get_decryption_stats(333)  # davey freed the decryptor with the commit that removed them

    earlier = h.sink.frames_in[333]
    chunks_before = len(ears.chunks[333])
    back = await h.join(333, 3003, between=everyone_talks)  # same SSRC, RTP sequence restarting at 100
    await h.speak(h.parties, 6)
    assert await heard_all_but_the_last(h, h.parties, {333: earlier})
    assert router.decoders[back.ssrc] is not first_decoder
    delivered = h.sink.frames_in[333] - earlier
    fresh = Downsampler()
    expected = [fresh.process(pcm) for pcm in reference_decode(back.sent_in_order())[:delivered]]
    got = ears.chunks[333][chunks_before:]
    # A fresh resampler holds its first ~11 ms (an empty first chunk); a stale one would emit the old tail at once.
    assert [len(chunk) for chunk in got] == [len(chunk) for chunk in expected] and len(got[0]) == 0
    # A fresh Opus decoder gives the reference samples (soxr's int16 rounding differs by an LSB or two per run).
    difference = np.frombuffer(b"".join(got), "<i2").astype(int) - np.frombuffer(b"".join(expected), "<i2")
    assert np.abs(difference).max() <= 4
