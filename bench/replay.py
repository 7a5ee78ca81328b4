"""The replay window: how much input a resume makes the model hear twice (and that it never loses any).

Run: `python -m bench.replay` (or `scripts/bench replay`). A real `LiveSession` (real SDK) against the
truthful fake Live server, input in real time: 20 ms frames, each numbered, handed to `send_audio` on a
20 ms tick. After 1 s the fake issues a resumption handle (covering everything it received so far, as the
real service's handle does); `--delay` seconds later the socket drops (TCP reset); the session resumes with
that handle and replays what it had not seen confirmed. Without `last_consumed_client_message_index`
(the Gemini API never sends it) a handle is taken to cover what was sent more than
`bot.live.outbound.UNCONFIRMED_MARGIN_S` before it arrived, so what went out in that margin is heard twice.

Scenarios: the kid is talking when the handle arrives (the worst case), and the kid is quiet then (the
usual one: handles come after a reply, and nothing is sent while nobody talks). Printed per scenario: audio
heard twice (min / median / max over the drop delays) and audio lost (must be 0). Timings are real: a
loaded machine only moves the numbers by its scheduling jitter.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import struct
import sys
from pathlib import Path

from bot.audio.formats import LIVE_INPUT
from bot.live.options import LiveConnectOptions
from bot.live.outbound import UNCONFIRMED_MARGIN_S
from bot.live.session import LiveSession

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fake_live import FakeLiveServer, make_client_settings

FRAME = 640
FRAME_S = 0.02
OPTIONS = LiveConnectOptions(max_retries=3, first_retry_delay=0.05, close_timeout=0.5)


class Env:
    """What `make_client_settings` needs from pytest's monkeypatch, for a script."""

    def setenv(self, name: str, value: str) -> None:
        import os

        os.environ[name] = value

    def delenv(self, name: str, raising: bool = True) -> None:
        import os

        os.environ.pop(name, None)


def frame(n: int) -> bytes:
    return struct.pack("<I", n) + bytes((i * 7 + n) % 251 for i in range(FRAME - 4))


async def trial(talking_at_handle: bool, delay: float) -> tuple[float, float]:
    """One drop `delay` s after the handle; returns (ms heard twice, ms lost)."""
    async with FakeLiveServer(vad_silence_ms=None, connection_lifetime_s=None) as server:
        session = LiveSession(make_client_settings(server, Env()), system_instruction="x", connect_options=OPTIONS)
        await session.start()
        sent: list[int] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        # seconds when the kid talks: through the handle, or stopping well before it (then the tail, the reply)
        talk = [(0.0, 1.0), (1.0, 3.0 + delay)] if talking_at_handle else [(0.0, 0.4), (1.3, 3.0 + delay)]
        handle_at, drop_at, end_at = 1.0, 1.0 + delay, 3.2 + delay
        issued = dropped = False
        tick = 0
        while (now := loop.time() - start) < end_at:
            if any(a <= now < b for a, b in talk):
                sent.append(tick)
                session.send_audio(frame(tick))
            if not issued and now >= handle_at:
                await server.send_resumption_update()
                issued = True
            if not dropped and now >= drop_at:
                await server.drop()
                dropped = True
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * FRAME_S - loop.time()))
        await asyncio.sleep(0.5)
        await session.close()
        heard_audio = bytes(server.sessions[0].audio)
    heard = [struct.unpack_from("<I", heard_audio, i)[0] for i in range(0, len(heard_audio) - FRAME + 1, FRAME)]
    twice = len(heard) - len(set(heard))
    lost = len(set(sent) - set(heard))
    return twice * FRAME_S * 1000, lost * FRAME_S * 1000


async def run(delays: list[float], verbose: bool = False) -> None:
    print(f"UNCONFIRMED_MARGIN_S = {UNCONFIRMED_MARGIN_S} s; drops {', '.join(f'{d:g}' for d in delays)} s after the "
          "handle\n")
    print(f"{'kid at the handle':<22}{'heard twice (ms) min / median / max':>38}{'lost (ms)':>12}")
    for talking in (True, False):
        results = [await trial(talking, delay) for delay in delays]
        if verbose:
            print("   ", [f"{d:g}s: {r[0]:.0f}/{r[1]:.0f}" for d, r in zip(delays, results, strict=True)])
        twice = [r[0] for r in results]
        lost = max(r[1] for r in results)
        label = "talking" if talking else "quiet (after a reply)"
        print(f"{label:<22}{min(twice):>16.0f} / {statistics.median(twice):>6.0f} / {max(twice):>6.0f}"
              f"{lost:>18.0f}")
    print(f"\n(the window is {LIVE_INPUT.ms_for_bytes(LIVE_INPUT.bytes_for_ms(UNCONFIRMED_MARGIN_S * 1000)):.0f} ms "
          "of audio at most: what was sent in the margin before the handle arrived)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n")[0])
    parser.add_argument("--delay", type=float, action="append",
                        help="seconds between the handle and the drop (repeatable; default 0.2 0.6 1.0 1.5)")
    parser.add_argument("--verbose", action="store_true", help="print every trial")
    args = parser.parse_args(argv)
    logging.getLogger("bot").setLevel(logging.ERROR)
    asyncio.run(run(args.delay or [0.2, 0.6, 1.0, 1.5], args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
