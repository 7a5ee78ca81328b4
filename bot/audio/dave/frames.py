"""The DAVE pieces that need no library internals: what a DAVE frame looks like, and the receive counters."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

OPUS_SILENCE = b"\xf8\xff\xfe"  # clients send it unencrypted; davey raises on it for users it has no key for
LOG_EVERY_SECONDS = 10.0  # per-packet failures are counted always, logged at most this often
DAVE_MAGIC = b"\xfa\xfa"  # the last two bytes of every DAVE frame (daveprotocol.com, "Payload Format")
DAVE_TAG_BYTES = 8
DAVE_MIN_TRAILER = DAVE_TAG_BYTES + 1 + 1 + 2  # tag, a 1-byte nonce, the size byte, the marker


@dataclass
class ReceiveStats:
    """Counters for one voice connection, written by voice-recv's threads and read by the conversation.

    `packets_received` counts RTP datagrams reaching the reader; each ends in exactly one of `decrypted`,
    `passed_silence`, `passed_plain` (plain Opus accepted: not an E2EE call, downgraded, an upgrade not yet
    executed, or davey's passthrough window), `concealed`, `dropped_unknown_ssrc` or `dropped_malformed` (voice-recv
    itself skips silence from unknown SSRCs before the shim sees it). `held` counts frames that first waited: DAVE
    frames for the MLS message carrying their key, and the frames of the same stream queued behind them (each
    still ends in one of the outcomes above). `opus_errors` counts frames the
    decoder rejected after a successful decrypt (replaced by silence).
    """

    packets_received: int = 0
    decrypted: int = 0
    passed_silence: int = 0
    passed_plain: int = 0
    concealed: int = 0
    held: int = 0
    dropped_unknown_ssrc: int = 0
    dropped_malformed: int = 0
    opus_errors: int = 0
    last_decrypt_ok_at: float | None = None
    failing_since: float | None = None  # first failure (session ready) since the last success
    last_failure_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str) -> None:
        """Add one to counter `name`."""
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def record_decrypt(self, ok: bool, *, session_ready: bool, now: float | None = None) -> None:
        """Track the failure streak behind `all_failing_for` (failures while not ready are expected windows)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if ok:
                self.decrypted += 1
                self.last_decrypt_ok_at = now
                self.failing_since = None
                return
            self.concealed += 1
            if not session_ready:
                self.failing_since = None
                return
            if self.failing_since is None:
                self.failing_since = now
            self.last_failure_at = now

    def all_failing_for(self, seconds: float) -> bool:
        """True when every decrypt has failed for `seconds` of traffic while the session was ready: reconnect voice."""
        with self._lock:
            if self.failing_since is None or self.last_failure_at is None:
                return False
            return self.last_failure_at - self.failing_since >= seconds

    def snapshot(self) -> dict[str, int | float | None]:
        """A consistent copy of the public fields, for logs and /tutor status."""
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class Throttle:
    """Allows one log line per `interval` seconds; per-packet failures would otherwise flood the log."""

    def __init__(self, interval: float = LOG_EVERY_SECONDS) -> None:
        self._interval = interval
        self._next_at = 0.0

    def ready(self) -> bool:
        now = time.monotonic()
        if now < self._next_at:
            return False
        self._next_at = now + self._interval
        return True


def has_dave_trailer(frame: bytes) -> bool:
    """True when `frame` ends in a well-formed DAVE trailer: 8-byte tag, ULEB128 nonce and ranges, size, 0xFAFA.

    Checking the structure, not just the marker, keeps a plain Opus frame that happens to end in FA FA (1 in 65,536)
    from being taken for ciphertext.
    """
    if len(frame) < DAVE_MIN_TRAILER + 1 or frame[-2:] != DAVE_MAGIC:
        return False
    size = frame[-3]
    if not DAVE_MIN_TRAILER <= size < len(frame):
        return False
    fields, values, pos = frame[len(frame) - size + DAVE_TAG_BYTES:-3], 0, 0
    while pos < len(fields):
        end = pos
        while end < len(fields) and fields[end] & 0x80:
            end += 1
        if end == len(fields) or end - pos >= 5:  # runs past the trailer, or longer than a 32-bit value
            return False
        pos, values = end + 1, values + 1
    return values % 2 == 1  # the nonce, then (offset, length) pairs
