"""Soak: one long conversation with a GoAway every few minutes; memory, stored turns, input not lost.

Run: `python -m bench.soak` (3 real minutes, GoAway every 30 s) or `python -m bench.soak --minutes 60
--goaway-every 600` (the real thing: 60 minutes, GoAway every 10 minutes as the service does).

What is not accelerated, and why: kids' audio enters the real sink at real-time pace (the fake voice
client's reader-like thread) and discord.py's real player reads every 20 ms, because the pump, the mixer's
jitter policy and playback are clocked by wall time; pushing audio faster would measure a different
pipeline. The kids take turns as in `bench.e2e` (1.5 s each, then room for the turn to end and be answered).
What is compressed is the GoAway rhythm (default every 30 s instead of every 10 minutes), so a short run
crosses as many reconnects as an hour would. RSS growth is measured from
the end of the first minute (after warm-up) and extrapolated linearly to 60 minutes; the fake server runs in
this process (GoAway and its session accounting are driven from here), so the audio it must keep is
subtracted and its per-message recordings are dropped (`LeanFakeLiveServer`).

Checks: every reply the fake server finished has its tutor turn in SQLite; every byte handed to
`LiveSession.send_audio` is in the fake model's session audio exactly once (resumption rolls the server's
copy back to what the handle covered, so a lost or duplicated replay shows as a length mismatch).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import discord.opus

from bench.e2e import REPLY_ROOM_S, TALK_S, InstrumentedLiveSession, rss_mb, settings_for
from bot.levels import BUILTIN_LEVELS
from bot.live.session import LiveConnectOptions
from bot.storage import Database, Repository
from bot.tutor import Conversations, StartRequest
from tests.fake_live import FakeLiveServer
from tests.helpers import FakeVoiceClient, FakeVoiceConnector, MockMember, MockVoiceChannel
from tests.signals import tone

GOAL_RSS_GROWTH_MB = 5.0
MB = 1024 * 1024


class LeanFakeLiveServer(FakeLiveServer):
    """The fake, minus the per-message recordings tests need (they would grow ~100 MB an hour in our RSS).

    `conn.messages` keeps its length (resumption indexes count it) but not the payloads; per-connection
    audio copies are dropped. `session.audio` must stay (handles roll it back); its size is subtracted.
    """

    def _on_client_message(self, conn, message) -> None:
        super()._on_client_message(conn, message)
        conn.messages[-1] = {}
        conn.audio.clear()

    def held_mb(self) -> float:
        return sum(len(s.audio) for s in self.sessions) / MB


class Talker(threading.Thread):
    """A kid taking turns: `TALK_S` of their own tone into the sink, then quiet while the others talk."""

    def __init__(self, voice: FakeVoiceClient, kid: MockMember, index: int, speakers: int,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True, name=f"talker-{index}")
        self.voice, self.kid, self.stop = voice, kid, stop
        self.turn_s = TALK_S + REPLY_ROOM_S
        self.offset_s, self.cycle_s = index * self.turn_s, speakers * self.turn_s
        self.speech = tone(220.0 + 60 * index, 48_000, TALK_S, amplitude=0.3, channels=2)

    def run(self) -> None:
        next_at = time.monotonic() + self.offset_s
        while not self.stop.wait(max(0.0, next_at - time.monotonic())):
            self.voice.speak(self.kid, self.speech).join()
            next_at += self.cycle_s


async def soak(minutes: float, goaway_every: float, speakers: int) -> None:
    async with LeanFakeLiveServer(think_time=0.2, reply_audio_ms=1500) as server:
        with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
            db = await Database.open(Path(tmp) / "tutor.sqlite3")
            repository = Repository(db)
            await repository.update_settings(77, daily_minutes=1440, max_session_minutes=240)
            connector = FakeVoiceConnector()  # discord.py's own AudioPlayer thread reads the playback
            conversations = Conversations(
                settings=settings_for(server), repository=repository, connect=connector,
                live_factory=lambda *a, **k: InstrumentedLiveSession(*a, **k, connect_options=LiveConnectOptions()))
            kids = [MockMember(display_name=f"Kid{k}") for k in range(speakers)]
            channel = MockVoiceChannel(name="Soak")
            channel.members = list(kids)
            conversation = await conversations.start(StartRequest(
                guild_id=77, voice_channel=channel, starter_id=kids[0].id, starter_name="Kid0",
                level=BUILTIN_LEVELS["space"], age=8, greet=False))  # replies counted: no greeting
            voice, stop = connector.last, threading.Event()
            threads = [Talker(voice, kid, k, speakers, stop) for k, kid in enumerate(kids)]
            for thread in threads:
                thread.start()
            started = time.monotonic()
            rss_at: dict[int, float] = {0: rss_mb() - server.held_mb()}
            goaways = 0
            next_goaway = started + goaway_every
            while (now := time.monotonic()) < started + minutes * 60:
                if now >= next_goaway:
                    await server.go_away(time_left=1.0, close_after=0.3)
                    goaways += 1
                    next_goaway += goaway_every
                minute = int((now - started) // 60)
                if minute not in rss_at:
                    rss_at[minute] = rss_mb() - server.held_mb()
                await asyncio.sleep(0.5)
            stop.set()
            for thread in threads:
                thread.join()
            await asyncio.sleep(2.0)  # the last spurt's tail, reply and turn writes
            live = conversation.live
            status = conversation.status()
            handed = live.audio_handed
            await conversations.stop_all("soak finished")
            turns = await repository.get_turns(77, conversation.session_id)
            await db.close()
            rss_end = rss_mb() - server.held_mb()
    heard = sum(len(s.audio) for s in server.sessions)
    tutor_turns = sum(1 for t in turns if t.role == "tutor")
    warm = rss_at.get(1, rss_at[0])
    growth = rss_end - warm
    per_hour = growth / max(minutes - 1, 1e-9) * 60 if minutes > 1 else float("nan")
    print(f"Soak: {minutes:g} real minutes, {speakers} kids taking turns ({TALK_S:g} s talk, {REPLY_ROOM_S:g} s for"
          f" the reply), GoAway every {goaway_every:g} s; fake Live in process\n")
    rows = [
        ("GoAways sent / Live reconnects", f"{goaways} / {status.reconnects}"),
        ("replies finished by the server / tutor turns stored", f"{server.replies_sent} / {tutor_turns}"),
        ("turns stored (child + tutor)", str(len(turns))),
        ("input bytes handed to LiveSession / heard by the model", f"{handed} / {heard} (Δ {heard - handed})"),
        ("Live sessions on the server (1 = every reconnect resumed)", str(len(server.sessions))),
        ("playback underruns", str(status.underruns)),
        ("RSS MB − fake's audio: start / 1st minute / end", f"{rss_at[0]:.1f} / {warm:.1f} / {rss_end:.1f}"),
        ("RSS growth after warm-up, extrapolated to 60 min", f"{per_hour:+.1f} MB"),
    ]
    for name, value in rows:
        print(f"{name:<60}{value}")
    checks = [
        ("every reply stored", tutor_turns >= server.replies_sent),
        ("no input lost or duplicated across reconnects", heard == handed),
        (f"RSS growth < {GOAL_RSS_GROWTH_MB:g} MB per hour", per_hour < GOAL_RSS_GROWTH_MB),
    ]
    print("goals: " + "; ".join(f"{name} {'✓' if ok else '✗'}" for name, ok in checks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="real minutes to run (default 3)")
    parser.add_argument("--goaway-every", type=float, default=30.0, help="seconds between GoAways (default 30)")
    parser.add_argument("--speakers", type=int, default=2, help="kids (default 2)")
    args = parser.parse_args()
    discord.opus._load_default()
    asyncio.run(soak(args.minutes, args.goaway_every, args.speakers))


if __name__ == "__main__":
    main()
