"""PlaybackSource: exact frames, underrun accounting, barge-in flush across threads, close."""

import threading

import numpy as np

from bot.audio.formats import DISCORD_FRAME_BYTES
from bot.audio.playback import SILENCE_FRAME, PlaybackSource
from tests.signals import peak_frequency, samples, tone

LIVE_CHUNK_BYTES = 960  # 20 ms of 24 kHz mono


def _feed(source: PlaybackSource, pcm24k: bytes, chunk: int = LIVE_CHUNK_BYTES) -> None:
    for start in range(0, len(pcm24k), chunk):
        source.feed(pcm24k[start : start + chunk])


def test_frames_are_exactly_20ms():
    """A whole second fed in 20 ms chunks comes out as exactly 50 frames of 3840 bytes."""
    source = PlaybackSource()
    _feed(source, tone(440, 24_000, 1.0))
    source.end_of_turn()
    frames = [source.read() for _ in range(50)]
    assert {len(f) for f in frames} == {DISCORD_FRAME_BYTES}
    assert source.buffered_ms == 0
    assert source.read() == SILENCE_FRAME
    assert source.frames_read == 51


def test_underrun_counted_only_mid_turn():
    """Idle silence is not an underrun; running dry before end_of_turn is."""
    source = PlaybackSource()
    assert source.read() == SILENCE_FRAME
    assert source.underruns == 0
    _feed(source, tone(440, 24_000, 0.1))
    queued = int(source.buffered_ms // 20)
    for _ in range(queued):
        assert source.read() != SILENCE_FRAME
    assert source.read() == SILENCE_FRAME
    assert source.underruns == 1
    source.end_of_turn()
    while source.buffered_ms:
        source.read()
    assert source.read() == SILENCE_FRAME
    assert source.underruns == 1


def test_end_of_turn_drains_the_tail():
    """Without end_of_turn the filter holds the last few ms; with it, all 100 ms are queued."""
    source = PlaybackSource()
    _feed(source, tone(440, 24_000, 0.1))
    assert source.buffered_ms < 100
    source.end_of_turn()
    assert source.buffered_ms == 100


def test_end_of_turn_pads_last_frame():
    """A turn that is not a whole number of frames is padded, so nothing is left stranded."""
    source = PlaybackSource()
    source.feed(tone(440, 24_000, 0.03))
    source.end_of_turn()
    assert source.buffered_ms == 40
    assert source.read() != SILENCE_FRAME
    last = samples(source.read())
    assert np.any(last[:1000] != 0)
    assert np.all(last[-900:] == 0)


def test_buffered_ms_tracks_reads():
    """buffered_ms is what was fed minus what was read."""
    source = PlaybackSource()
    _feed(source, tone(440, 24_000, 0.2))
    source.end_of_turn()
    assert source.buffered_ms == 200
    for _ in range(3):
        source.read()
    assert source.buffered_ms == 140


def test_flush_drops_everything_and_reports_ms():
    """Barge-in drops the queue at once and says how much; the next turn starts clean."""
    source = PlaybackSource()
    _feed(source, tone(440, 24_000, 1.0))
    source.end_of_turn()
    source.read()
    assert source.flush() == 980
    assert source.buffered_ms == 0
    assert source.read() == SILENCE_FRAME
    assert source.underruns == 0
    _feed(source, tone(440, 24_000, 0.2))
    source.end_of_turn()
    assert source.buffered_ms == 200


def test_flush_while_reading_from_another_thread():
    """A reader thread keeps getting 3840-byte frames while the loop side feeds and flushes."""
    source = PlaybackSource()
    sizes: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                sizes.append(len(source.read()))
        except BaseException as error:  # the test reports any failure in the thread
            errors.append(error)

    thread = threading.Thread(target=reader)
    thread.start()
    speech = tone(440, 24_000, 0.5)
    for _ in range(200):
        _feed(source, speech, chunk=4800)
        source.flush()
    stop.set()
    thread.join(timeout=10)
    assert not errors
    assert len(sizes) > 0
    assert set(sizes) == {DISCORD_FRAME_BYTES}
    assert source.buffered_ms == 0


def test_close_ends_the_player():
    """After close (or discord.py's cleanup) read returns b"", which stops the AudioPlayer."""
    source = PlaybackSource()
    _feed(source, tone(440, 24_000, 0.2))
    assert len(source.read()) == DISCORD_FRAME_BYTES
    source.cleanup()
    assert source.read() == b""
    source.feed(tone(440, 24_000, 0.1))
    assert source.read() == b""
    assert source.is_opus() is False


def test_tone_comes_out_at_48khz_stereo():
    """A 1 kHz tone fed at 24 kHz reads back as 1 kHz at 48 kHz with identical channels."""
    source = PlaybackSource()
    _feed(source, tone(1000, 24_000, 1.0, 0.5))
    source.end_of_turn()
    out = samples(b"".join(source.read() for _ in range(50)), channels=2)
    assert np.array_equal(out[:, 0], out[:, 1])
    assert peak_frequency(out[:, 0], 48_000) == 1000


def test_first_frame_latency_per_turn():
    """One latency per turn, taken when that turn's own first frame leaves read()."""
    source = PlaybackSource()
    _feed(source, tone(440, 24_000, 0.2))
    source.end_of_turn()
    _feed(source, tone(440, 24_000, 0.2))  # the next turn queues behind the first
    source.read()
    assert len(source.first_frame_latencies) == 1
    for _ in range(9):
        source.read()
    assert len(source.first_frame_latencies) == 1
    source.read()
    latencies = source.first_frame_latencies
    assert len(latencies) == 2
    assert all(0 <= seconds < 5 for seconds in latencies)


class _Player:
    """Records pause()/resume() as discord.py's VoiceClient would receive them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


def test_idle_read_pauses_the_player_once_and_feed_resumes_it():
    """Nothing queued and no turn open → one pause; the next chunk → one resume."""
    source, player = PlaybackSource(), _Player()
    source.pause_when_idle(player)
    assert source.read() == SILENCE_FRAME
    assert source.read() == SILENCE_FRAME  # a read racing the pause does not pause twice
    assert player.calls == ["pause"] and source.is_paused
    _feed(source, tone(440, 24_000, 0.1))
    _feed(source, tone(440, 24_000, 0.1))
    assert player.calls == ["pause", "resume"] and not source.is_paused
    assert source.read() != SILENCE_FRAME


def test_a_turn_plays_out_before_the_player_rests():
    """The player pauses only after the turn's last frame, not during an underrun mid turn."""
    source, player = PlaybackSource(), _Player()
    source.pause_when_idle(player)
    _feed(source, tone(440, 24_000, 0.1))
    queued = int(source.buffered_ms // 20)
    for _ in range(queued + 2):
        source.read()  # runs dry mid turn: underruns, no pause
    assert player.calls == [] and source.underruns == 2
    source.end_of_turn()
    while source.read() != SILENCE_FRAME:
        pass
    assert player.calls == ["pause"]


def test_barge_in_flush_lets_the_player_rest():
    """After a barge-in flush the next read finds nothing to play and pauses."""
    source, player = PlaybackSource(), _Player()
    source.pause_when_idle(player)
    _feed(source, tone(440, 24_000, 0.5))
    source.read()
    source.flush()
    assert source.read() == SILENCE_FRAME
    assert player.calls == ["pause"]


def test_without_a_player_the_source_never_pauses():
    """pause_when_idle(None) (and the default) keeps the never-ending behaviour."""
    source = PlaybackSource()
    for _ in range(5):
        assert source.read() == SILENCE_FRAME
    assert not source.is_paused and source.pauses == 0
def test_queued_reply_audio_is_capped():
    """A Live server that streams far more than anyone could hear cannot grow the queue past the cap."""
    source = PlaybackSource(max_queued_ms=2000)
    _feed(source, tone(440, 24_000, 5.0))
    source.end_of_turn()
    assert 1900 <= source.buffered_ms <= 2000
    assert 2900 <= source.dropped_ms <= 3100
    assert source.read() != SILENCE_FRAME  # the start of the reply is what is kept and played


def test_a_players_cleanup_detaches_only_its_tap():
    """discord.py's player cleans up its source when it ends; the shared audio and the next tap carry on."""
    import discord.player

    source = PlaybackSource()
    _feed(source, tone(440, 24_000, 0.2))
    source.end_of_turn()
    first = source.tap()
    first.cleanup()  # what the ending player thread does
    assert first.read() == b"" and source.buffered_ms > 0
    second = source.tap()
    assert second.read() != SILENCE_FRAME
    third = source.tap()  # a newer player: the previous one stops being fed
    assert second.read() == b"" and third.read() != SILENCE_FRAME
    assert isinstance(third, discord.player.AudioSource) and not third.is_opus()
