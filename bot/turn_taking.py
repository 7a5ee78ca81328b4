"""How long a pause ends a child's turn: the mixer's silence tail, then `audio_stream_end`.

Young children pause mid-sentence, and a turn that ends in such a pause makes the tutor answer half a
question, then get talked over. Measured with `python -m bench.turn_taking` (the bot's real mixer and the
fake server's voice detection, scripted speech with 0.5–1.5 s pauses; table in
/work/team/notes/issue-13.md): the old 500 ms cut 66 % of older and ~100 % of younger children's
paused sentences; 1000 ms is the shortest tail that cuts none of the 7–14 script (pauses up to 1.0 s) and
1500 ms the shortest for the 4–6 script (pauses up to 1.5 s). The defaults add 200 ms of margin: 1200 ms,
and 500 ms more under 7. A finished child waits about the tail (+ ~40 ms) before the reply starts.

Leaving the end to the server's own detection is no better: 3.1 ends turns after ~2 s whatever
`silence_duration_ms` says (unverified for 3.8), and at 1 s it cuts like a 1000 ms tail.
"""

from __future__ import annotations

DEFAULT_PAUSE_MS = 1200  # ages 7 and up
YOUNGER_THAN = 7
YOUNGER_EXTRA_MS = 500  # under 7: 1700 ms by default
PAUSE_RANGE_MS = (500, 3000)  # what a server may set (`/tutor-settings turn-pause`)


def turn_pause_ms(server_setting_ms: int | None, age: int) -> int:
    """The silence tail for a conversation: the server's setting (or the default), longer for under-7s."""
    base = DEFAULT_PAUSE_MS if server_setting_ms is None else server_setting_ms
    return base + (YOUNGER_EXTRA_MS if age < YOUNGER_THAN else 0)
