"""What a tutor conversation costs, from the usage Gemini reports, and what compression settings save.

The bill (`/work/shared/gemini_live_38.md` §D): Live re-bills the whole context on every turn (old audio
included, at the audio input price), and only the sum of every per-turn `usage_metadata` snapshot
reproduces what Google charges. So a conversation's cost is the sum of its snapshots, each priced by
modality: prompt text and audio at the input prices, response audio and text at the output prices, and
thoughts as output text. Prices are settings whose defaults are the published ones for `gemini-3.8-live`
(paid tier, Sept 2026). Tokens the server does not break down by modality are priced as audio (the
dearer rate), so the meter can over-report a little but never under-reports.

`simulate_session` runs the same arithmetic for a typical conversation (§D's profile) under given
sliding-window settings, which is how `trigger_tokens`/`target_tokens` were chosen:
`python -m bot.cost` prints the comparison.
"""

from __future__ import annotations

import argparse
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

AUDIO_TOKENS_PER_SECOND = 25  # $0.018/min of output audio at $12 per 1M tokens (§D); 32 is the upper bound
MODEL_INPUT_LIMIT = 131_072  # gemini-3.8-live's input limit (§A)
# The service's trigger when none is set: 80 % of the context limit (third-party SDK docs; not in Google's own).
SERVICE_DEFAULT_TRIGGER = int(MODEL_INPUT_LIMIT * 0.8)
PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Prices:
    """Dollars per million tokens, by what the tokens are."""

    audio_in: float = 3.00
    audio_out: float = 12.00
    text_in: float = 0.75
    text_out: float = 4.50

    @classmethod
    def from_settings(cls, settings: object) -> Prices:
        """The price table in `bot.config.Settings` (`gemini_price_*_per_million`)."""
        return cls(**{f.name: getattr(settings, f"gemini_price_{f.name}_per_million") for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """Tokens by how they are billed; `thoughts` are billed as output text."""

    text_in: int = 0
    audio_in: int = 0
    text_out: int = 0
    audio_out: int = 0
    thoughts: int = 0

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def total(self) -> int:
        return self.text_in + self.audio_in + self.text_out + self.audio_out + self.thoughts

    def cost(self, prices: Prices) -> float:
        """Dollars for these tokens at `prices`."""
        return (self.text_in * prices.text_in + self.audio_in * prices.audio_in + self.audio_out * prices.audio_out
                + (self.text_out + self.thoughts) * prices.text_out) / PER_MILLION


def split_by_modality(*, prompt: int | None, response: int | None, thoughts: int | None = None,
                      tool_use_prompt: int | None = None, prompt_details: Iterable[tuple[str, int]] = (),
                      response_details: Iterable[tuple[str, int]] = ()) -> TokenCounts:
    """One usage snapshot as `TokenCounts`.

    `*_details` are (modality, tokens) pairs as the server reports them (`TEXT`, `AUDIO`, …). Prompt tokens
    the details do not cover are priced as audio input, response tokens as audio output; tool-use prompt
    tokens (what our tool responses added) as input text.
    """
    counts = {"text_in": 0, "audio_in": 0, "text_out": 0, "audio_out": 0}
    for direction, total, details in (("in", prompt or 0, prompt_details), ("out", response or 0, response_details)):
        covered = 0
        for modality, tokens in details:
            kind = "text" if modality.upper().removeprefix("MODALITY_") == "TEXT" else "audio"
            counts[f"{kind}_{direction}"] += max(0, tokens)
            covered += max(0, tokens)
        counts[f"audio_{direction}"] += max(0, total - covered)
    counts["text_in"] += max(0, tool_use_prompt or 0)
    return TokenCounts(thoughts=max(0, thoughts or 0), **counts)


def usage_tokens(usage: object) -> TokenCounts:
    """A Live `Usage` event (`bot.live.events.Usage`) as `TokenCounts`; fields it lacks count as absent."""
    return split_by_modality(
        prompt=getattr(usage, "prompt_tokens", None), response=getattr(usage, "response_tokens", None),
        thoughts=getattr(usage, "thoughts_tokens", None),
        tool_use_prompt=getattr(usage, "tool_use_prompt_tokens", None),
        prompt_details=dict(getattr(usage, "prompt_by_modality", None) or {}).items(),
        response_details=dict(getattr(usage, "response_by_modality", None) or {}).items())


def dollars(amount: float) -> str:
    """`$0.0042`, `$0.73`, `$12.40`: enough digits that a single turn's cost is not shown as zero."""
    if amount == 0:
        return "$0.00"
    if abs(amount) < 0.01:
        return f"${amount:.4f}"
    return f"${amount:.2f}"


# ----- the model of a typical conversation ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationProfile:
    """A typical tutor conversation per minute (§D): four turns, 24 s of kids and 18 s of tutor audio."""

    turns_per_minute: float = 4.0
    kid_audio_s_per_minute: float = 24.0
    tutor_audio_s_per_minute: float = 18.0
    instruction_tokens: int = 700
    thoughts_per_turn: int = 100
    audio_tokens_per_s: float = AUDIO_TOKENS_PER_SECOND

    @property
    def kid_tokens_per_turn(self) -> float:
        return self.kid_audio_s_per_minute / self.turns_per_minute * self.audio_tokens_per_s

    @property
    def tutor_tokens_per_turn(self) -> float:
        return self.tutor_audio_s_per_minute / self.turns_per_minute * self.audio_tokens_per_s

    @property
    def tokens_per_minute(self) -> float:
        """How fast the conversation itself grows the context."""
        return (self.kid_audio_s_per_minute + self.tutor_audio_s_per_minute) * self.audio_tokens_per_s


@dataclass(frozen=True, slots=True)
class Compression:
    """Sliding-window settings; None means what the service does when the field is not sent."""

    trigger_tokens: int | None = None
    target_tokens: int | None = None

    def __post_init__(self) -> None:
        trigger, target = self.effective
        if target <= 0 or target >= trigger:
            raise ValueError(f"target_tokens must be above 0 and below trigger_tokens (got {target} / {trigger})")

    @property
    def effective(self) -> tuple[int, int]:
        """(trigger, target) as the service applies them: the default trigger, and half the trigger as target."""
        trigger = self.trigger_tokens or SERVICE_DEFAULT_TRIGGER
        return trigger, self.target_tokens or trigger // 2

    def label(self) -> str:
        if self.trigger_tokens is None and self.target_tokens is None:
            return "SlidingWindow() (service default)"
        trigger, target = self.effective
        return f"trigger {trigger:,} / target {target:,}"


@dataclass(frozen=True, slots=True)
class SessionEstimate:
    """What one simulated session costs and how much conversation the tutor keeps in mind."""

    minutes: float
    compression: Compression
    usage: TokenCounts
    cost: float
    peak_context_tokens: int
    compressions: int
    memory_after_cut_s: float | None  # conversation audio still in context right after a cut (None: never cut)


def simulate_session(minutes: float, compression: Compression = Compression(), prices: Prices = Prices(),
                     profile: ConversationProfile = ConversationProfile()) -> SessionEstimate:
    """Bill a typical session turn by turn, the way the service does.

    Each turn's prompt is the whole context: the system instruction, every earlier turn still in the window
    and the kids' new audio. Before a turn, a context above `trigger` is cut back to `target` by dropping
    the oldest whole turns (the window is always cut at the start of a user turn; the instruction stays).
    The response is the tutor's audio plus its thoughts, which are not kept in the context.
    """
    trigger, target = compression.effective
    kid, tutor = profile.kid_tokens_per_turn, profile.tutor_tokens_per_turn
    history: deque[float] = deque()
    in_window = 0.0
    usage = TokenCounts()
    peak, cuts, memory = 0, 0, None
    for _ in range(round(minutes * profile.turns_per_minute)):
        if profile.instruction_tokens + in_window + kid > trigger:
            while history and profile.instruction_tokens + in_window + kid > target:
                in_window -= history.popleft()
            cuts += 1
            memory = in_window / profile.audio_tokens_per_s
        prompt_audio = round(in_window + kid)
        peak = max(peak, profile.instruction_tokens + prompt_audio)
        usage += TokenCounts(text_in=profile.instruction_tokens, audio_in=prompt_audio, audio_out=round(tutor),
                             thoughts=profile.thoughts_per_turn)
        history.append(kid + tutor)
        in_window += kid + tutor
    return SessionEstimate(minutes, compression, usage, usage.cost(prices), peak, cuts, memory)


def comparison(candidates: Sequence[Compression], minutes: Sequence[float] = (10, 30),
               prices: Prices = Prices(), profile: ConversationProfile = ConversationProfile()) -> str:
    """A plain-text table: cost per session length for each setting, and the memory each keeps."""
    header = f"{'compression':<36}" + "".join(f"{f'{m:g} min':>12}" for m in minutes) + "   tutor remembers"
    lines = [header, "-" * len(header)]
    for candidate in candidates:
        estimates = [simulate_session(m, candidate, prices, profile) for m in minutes]
        longest = estimates[-1]
        if longest.memory_after_cut_s is None:
            memory = "everything (never cut)"
        else:
            audio_s_per_minute = profile.kid_audio_s_per_minute + profile.tutor_audio_s_per_minute
            keeps = longest.memory_after_cut_s / audio_s_per_minute
            window = (candidate.effective[0] - profile.instruction_tokens) / profile.tokens_per_minute
            memory = f"{keeps:.1f}–{window:.1f} min, cut {longest.compressions}× in {longest.minutes:g} min"
        lines.append(f"{candidate.label():<36}" + "".join(f"{dollars(e.cost):>12}" for e in estimates)
                     + f"   {memory}")
    lines += ["", f"Profile: {profile.turns_per_minute:g} turns/min, kids {profile.kid_audio_s_per_minute:g} s + tutor "
              f"{profile.tutor_audio_s_per_minute:g} s of audio per minute at {profile.audio_tokens_per_s:g} tokens/s, "
              f"{profile.instruction_tokens} instruction tokens, {profile.thoughts_per_turn} thought tokens per turn.",
              f"Prices per 1M tokens: audio in ${prices.audio_in:.2f}, audio out ${prices.audio_out:.2f}, "
              f"text in ${prices.text_in:.2f}, text out ${prices.text_out:.2f}. One session serves every kid in "
              "the channel."]
    return "\n".join(lines)


CANDIDATES = (
    Compression(),
    Compression(32_000, 16_000),
    Compression(16_000, 8_000),
    Compression(12_000, 6_000),
    Compression(8_000, 4_000),
    Compression(6_000, 3_000),
)


def main(argv: Sequence[str] | None = None) -> None:
    """Print what a session costs under each candidate setting (and the configured one)."""
    parser = argparse.ArgumentParser(prog="python -m bot.cost", description=main.__doc__)
    parser.add_argument("--minutes", type=float, nargs="*", default=[10, 30], help="session lengths (default 10 30)")
    parser.add_argument("--trigger", type=int, help="also show this trigger_tokens")
    parser.add_argument("--target", type=int, help="with --trigger: this target_tokens")
    args = parser.parse_args(argv)
    from bot.config import DEFAULT_COMPRESSION_TARGET, DEFAULT_COMPRESSION_TRIGGER

    candidates = list(CANDIDATES)
    if args.trigger:
        candidates.append(Compression(args.trigger, args.target))
    print(comparison(candidates, args.minutes))
    chosen = Compression(DEFAULT_COMPRESSION_TRIGGER, DEFAULT_COMPRESSION_TARGET)
    print(f"\nThe bot's default (GEMINI_COMPRESSION_TRIGGER_TOKENS / _TARGET_TOKENS): {chosen.label()}.")


if __name__ == "__main__":
    main()

