"""Mixer: summing, the silence tail and STREAM_END, jitter holds, the queue cap, speaker activity."""

import random

import numpy as np
import pytest

from bot.audio.convert import Downsampler
from bot.audio.formats import DISCORD_FRAME_BYTES
from bot.audio.mixer import FRAME_BYTES, SILENCE_FRAME, STREAM_END, Mixer, StreamEnd
from tests.signals import samples, tone

FRAME_S = 0.020


def _speech(ms: int, freq: float = 300, amplitude: float = 0.3) -> bytes:
    return tone(freq, 16_000, ms / 1000, amplitude)


def _drain(mixer: Mixer, start: float, pulls: int) -> list[bytes | StreamEnd | None]:
    return [mixer.pull(start + i * FRAME_S) for i in range(pulls)]


def test_single_speaker_passes_through_exactly():
    """One speaker's whole frames come out byte for byte."""
    mixer, speech = Mixer(), _speech(100)
    mixer.push(1, speech, now=0.0)
    assert b"".join(_drain(mixer, 0.0, 5)) == speech


def test_quiet_speakers_sum_exactly():
    """Two quiet speakers mix to the sample-wise sum."""
    mixer = Mixer()
    a, b = _speech(20, 300, 0.2), _speech(20, 500, 0.2)
    mixer.push(1, a, now=0.0)
    mixer.push(2, b, now=0.0)
    out = mixer.pull(0.0)
    assert np.array_equal(samples(out), samples(a) + samples(b))
    assert mixer.active_speakers == 2


def test_loud_speakers_clip_without_wrapping():
    """Two near-full-scale in-phase tones stay within int16 and never flip sign."""
    mixer = Mixer()
    loud = _speech(20, 400, 0.95)
    mixer.push(1, loud, now=0.0)
    mixer.push(2, loud, now=0.0)
    out, total = samples(mixer.pull(0.0)), 2 * samples(loud)
    assert np.abs(out).max() >= 32_000  # limited, not attenuated
    nonzero = total != 0
    assert np.all(np.sign(out[nonzero]) == np.sign(total[nonzero]))


@pytest.mark.parametrize("tail_ms", [500, 300])
def test_silence_tail_then_stream_end_once(tail_ms):
    """After speech: tail_ms of silence frames, STREAM_END exactly once, then None."""
    mixer = Mixer(tail_ms=tail_ms)
    mixer.push(1, _speech(60), now=0.0)
    out = _drain(mixer, 0.0, 3 + tail_ms // 20 + 10)
    assert all(isinstance(o, bytes) and o != SILENCE_FRAME for o in out[:3])
    assert out[3 : 3 + tail_ms // 20] == [SILENCE_FRAME] * (tail_ms // 20)
    assert out[3 + tail_ms // 20] is STREAM_END
    assert out[4 + tail_ms // 20 :] == [None] * 9
    assert (mixer.stream_ends, mixer.silence_frames_out, mixer.frames_out) == (1, tail_ms // 20, 3 + tail_ms // 20)


def test_nothing_sent_before_anyone_speaks():
    """A fresh mixer sends nothing: no silence, no STREAM_END."""
    assert _drain(Mixer(), 0.0, 5) == [None] * 5


def test_new_speech_restarts_stream():
    """Speech after STREAM_END is sent again and earns its own tail and STREAM_END."""
    mixer = Mixer(tail_ms=100)
    mixer.push(1, _speech(20), now=0.0)
    first = _drain(mixer, 0.0, 10)
    mixer.push(2, _speech(20), now=1.0)
    second = _drain(mixer, 1.0, 10)
    assert first.count(STREAM_END) == 1
    assert second[0] not in (None, SILENCE_FRAME)
    assert second.count(SILENCE_FRAME) == 5
    assert second.count(STREAM_END) == 1
    assert mixer.stream_ends == 2


def test_stream_end_is_a_singleton():
    """StreamEnd() is the one STREAM_END marker, so callers may compare with `is`."""
    assert StreamEnd() is STREAM_END


def test_late_rest_of_frame_holds_then_pads():
    """A partial frame waits while packets are fresh, then is padded once the speaker went quiet."""
    mixer, speech = Mixer(jitter_ms=40), _speech(40)
    mixer.push(1, speech[:1000], now=0.0)
    assert mixer.pull(0.005) == speech[:FRAME_BYTES]
    assert mixer.pull(0.025) is None  # 360 bytes queued, last push 25 ms ago: wait for the rest
    last = mixer.pull(0.045)  # 45 ms of quiet: the spurt is over
    assert last == speech[FRAME_BYTES:1000] + bytes(FRAME_BYTES - (1000 - FRAME_BYTES))


def test_speaker_queue_capped_dropping_oldest():
    """Beyond the cap the oldest audio goes, and dropped_ms says how much."""
    mixer, speech = Mixer(queue_cap_ms=500), _speech(1000)
    mixer.push(1, speech, now=0.0)
    assert mixer.queued_ms == 500
    assert mixer.dropped_ms == 500
    assert mixer.pull(0.0) == speech[len(speech) // 2 : len(speech) // 2 + FRAME_BYTES]


def test_odd_chunk_rejected():
    """A chunk with half a sample is a caller bug and raises."""
    with pytest.raises(ValueError, match="2-byte"):
        Mixer().push(1, b"\x00" * 641, now=0.0)


def test_remove_drops_queue_keeps_history():
    """A speaker who leaves stops contributing, but transcripts can still name them."""
    mixer = Mixer(tail_ms=0)
    mixer.push(1, _speech(200), now=0.2)
    mixer.remove(1)
    assert mixer.pull(0.2) is None
    assert mixer.dropped_ms == 200
    assert mixer.speakers_between(0.0, 1.0) == [1]


def test_speakers_between_orders_by_speech():
    """Who spoke in a window, most speech first; silence does not count; forget_before bounds memory."""
    mixer = Mixer()
    for i in range(10):
        mixer.push(1, _speech(20), now=0.02 * (i + 1))  # 0.0–0.2 s
    for i in range(30):
        mixer.push(2, _speech(20), now=0.1 + 0.02 * (i + 1))  # 0.1–0.7 s
    for i in range(50):
        mixer.push(3, bytes(FRAME_BYTES), now=0.02 * (i + 1))  # connected, silent
    assert mixer.speakers_between(0.0, 1.0) == [2, 1]
    assert mixer.speakers_between(0.0, 0.05) == [1]
    assert mixer.speakers_between(0.3, 0.4) == [2]
    assert mixer.speakers_between(2.0, 3.0) == []
    assert mixer.speakers_between(0.1995, 0.3) == [2]  # kid 1's last half millisecond is the previous turn's
    mixer.forget_before(0.5)
    assert mixer.speakers_between(0.0, 1.0) == [2]


def test_jittered_speaker_has_no_gaps():
    """Real soxr chunks arriving 10–30 ms apart come out as one unbroken stream within ~40 ms."""
    rng = random.Random(7)
    downsampler, mixer = Downsampler(), Mixer()
    source = tone(440, 48_000, 4.0, 0.3, channels=2)
    events = []
    for k in range(200):  # arrival = nominal time + 0–10 ms, so consecutive pushes are 10–30 ms apart
        chunk = downsampler.process(source[k * DISCORD_FRAME_BYTES : (k + 1) * DISCORD_FRAME_BYTES])
        events.append((k * FRAME_S + rng.uniform(0, 0.010), 0, chunk))
    events += [(j * FRAME_S + 0.007, 1, None) for j in range(260)]
    pushed, sent, push_times, send_times = bytearray(), bytearray(), [], []
    for now, is_pull, chunk in sorted(events, key=lambda e: (e[0], e[1])):
        if not is_pull:
            mixer.push(1, chunk, now)
            pushed += chunk
            push_times += [now] * (len(chunk) // 2)
            continue
        out = mixer.pull(now)
        if isinstance(out, bytes) and out != SILENCE_FRAME:
            sent += out
            send_times += [now] * (len(out) // 2)
    assert bytes(sent[: len(pushed)]) == bytes(pushed)  # nothing inserted, nothing lost
    assert mixer.silence_frames_out == 25
    assert mixer.stream_ends == 1
    waited = np.array(send_times[: len(push_times)]) - np.array(push_times)
    assert waited.mean() <= 0.045


def test_starting_speaker_does_not_hold_others():
    """A kid whose first chunk is short of a frame joins later; the one already talking keeps flowing."""
    mixer, speech = Mixer(), _speech(40)
    mixer.push(1, speech, now=0.0)
    mixer.push(2, _speech(10, 500), now=0.0)
    assert mixer.pull(0.0) == speech[:FRAME_BYTES]
    assert mixer.active_speakers == 1


def test_late_talking_speaker_holds_the_mix():
    """If one of two talking kids is short of a frame with packets still coming, nobody is sent yet."""
    mixer, a, b = Mixer(), _speech(40, 300), _speech(40, 500)
    mixer.push(1, a, now=0.0)
    mixer.push(2, b[:FRAME_BYTES + 100], now=0.0)
    assert mixer.pull(0.0) is not None
    assert mixer.pull(0.02) is None
    mixer.push(2, b[FRAME_BYTES + 100 :], now=0.025)
    out = mixer.pull(0.04)
    assert np.array_equal(samples(out), samples(a[FRAME_BYTES:]) + samples(b[FRAME_BYTES:]))


def test_steady_speaker_spurt_end_waits_less_than_jitter_ms():
    """After steady 20 ms packets, the spurt's last partial frame waits ~30 ms, not the full 40 ms."""
    mixer, speech = Mixer(jitter_ms=40), _speech(220)
    chunk = 600  # a bit short of a frame per packet, so a remainder is left when the spurt ends
    pushed = 0
    for k in range(10):
        mixer.push(1, speech[pushed : pushed + chunk], now=k * FRAME_S)
        pushed += chunk
        mixer.pull(k * FRAME_S + 0.001)
    last_push = 9 * FRAME_S
    while mixer.queued_ms >= 20:
        mixer.pull(last_push + 0.002)
    assert 0 < mixer.queued_ms < 20
    assert mixer.pull(last_push + 0.025) is None  # still within the steady hold: the rest may come
    last = mixer.pull(last_push + 0.031)
    assert isinstance(last, bytes) and last != SILENCE_FRAME and last.endswith(b"\0\0")
    assert mixer.queued_ms == 0


def _edges(mixer: Mixer, pushes: dict[int, bytes], pulls: int) -> list[tuple[str, bool]]:
    """Pull `pulls` times 20 ms apart, pushing `pushes[i]` just before pull i; (what came out, at_spurt_edge)."""
    out = []
    for i in range(pulls):
        now = i * FRAME_S
        if i in pushes:
            mixer.push(1, pushes[i], now=now)
        result = mixer.pull(now)
        kind = "end" if result is STREAM_END else "none" if result is None else (
            "silence" if result == SILENCE_FRAME else "voice")
        out.append((kind, mixer.at_spurt_edge))
    return out


def test_a_spurt_edge_marks_its_first_frame_and_its_padded_last_frame():
    """The first whole frame and the zero-padded remainder are edges; the middle and the tail are not."""
    mixer = Mixer(tail_ms=40)
    speech = _speech(70)  # 3 whole frames + half a frame
    pushes = {i: speech[i * FRAME_BYTES:(i + 1) * FRAME_BYTES] for i in range(4)}
    got = _edges(mixer, pushes, 10)
    voiced = [edge for kind, edge in got if kind == "voice"]
    assert voiced == [True, False, False, True]
    assert all(not edge for kind, edge in got if kind in ("silence", "end", "none"))


def test_a_spurt_ending_on_a_whole_frame_has_its_edge_on_the_first_tail_frame():
    """When the last packet filled a whole frame, the end is known once the hold gives up: the first silence."""
    mixer = Mixer(tail_ms=40)
    speech = _speech(60)
    pushes = {i: speech[i * FRAME_BYTES:(i + 1) * FRAME_BYTES] for i in range(3)}
    got = _edges(mixer, pushes, 10)
    assert [edge for kind, edge in got if kind == "voice"] == [True, False, False]
    first_silence = next(edge for kind, edge in got if kind == "silence")
    assert first_silence is True


def test_the_mixer_is_idle_only_when_nothing_is_queued_or_owed():
    """idle: false while audio is queued, through the tail and until STREAM_END has been returned."""
    mixer = Mixer(tail_ms=40)
    assert mixer.idle
    mixer.push(1, _speech(20), now=0.0)
    assert not mixer.idle
    outputs = []
    while STREAM_END not in outputs:
        assert not mixer.idle  # queued, held, or the tail still owed
        outputs.append(mixer.pull(len(outputs) * FRAME_S))
    assert mixer.idle and mixer.pull(1.0) is None


def test_a_hold_says_when_it_gives_up():
    """Holding for a steady speaker's rest of a frame: `holding`, and `hold_until` = last push + the steady hold;
    the rest arriving ends the hold."""
    mixer, speech = Mixer(jitter_ms=40), _speech(400)
    chunk, pushed = 600, 0  # a bit short of a frame per packet: a remainder is left at times
    for k in range(12):
        mixer.push(1, speech[pushed : pushed + chunk], now=k * FRAME_S)
        pushed += chunk
        while mixer.pull(k * FRAME_S + 0.001) not in (None, SILENCE_FRAME) and mixer.queued_ms >= 20:
            pass
    last_push = 11 * FRAME_S
    assert 0 < mixer.queued_ms < 20
    assert mixer.pull(last_push + 0.005) is None
    assert mixer.holding and mixer.hold_until == pytest.approx(last_push + 0.030, abs=0.001)
    mixer.push(1, speech[pushed : pushed + chunk], now=last_push + 0.021)
    assert isinstance(mixer.pull(last_push + 0.021), bytes) and not mixer.holding
    assert mixer.hold_until == float("inf")
