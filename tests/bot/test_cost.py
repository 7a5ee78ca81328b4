"""The cost model: pricing usage snapshots by modality, and the simulated session the compression was chosen from."""

import pytest

from bot.config import DEFAULT_COMPRESSION_TARGET, DEFAULT_COMPRESSION_TRIGGER, load_settings
from bot.cost import (
    SERVICE_DEFAULT_TRIGGER,
    Compression,
    Prices,
    TokenCounts,
    comparison,
    dollars,
    main,
    simulate_session,
    split_by_modality,
)


def test_published_prices_are_the_defaults():
    """Settings carry gemini-3.8-live's paid-tier prices (Sept 2026) unless changed."""
    settings = load_settings(discord_token="t", gemini_api_key="k")
    assert Prices.from_settings(settings) == Prices(audio_in=3.00, audio_out=12.00, text_in=0.75, text_out=4.50)
    changed = load_settings(discord_token="t", gemini_api_key="k", gemini_price_audio_in_per_million=1.5)
    assert Prices.from_settings(changed).audio_in == 1.5


def test_a_million_tokens_of_each_kind_cost_their_price():
    """Each kind is priced at its own rate; thoughts at the text output rate."""
    prices = Prices()
    assert TokenCounts(audio_in=1_000_000).cost(prices) == pytest.approx(3.00)
    assert TokenCounts(audio_out=1_000_000).cost(prices) == pytest.approx(12.00)
    assert TokenCounts(text_in=1_000_000).cost(prices) == pytest.approx(0.75)
    assert TokenCounts(text_out=1_000_000).cost(prices) == pytest.approx(4.50)
    assert TokenCounts(thoughts=1_000_000).cost(prices) == pytest.approx(4.50)


def test_snapshot_is_split_by_the_modality_details():
    """The forum's 3.8 snapshot shape: prompt TEXT + AUDIO, response AUDIO, thoughts apart."""
    counts = split_by_modality(prompt=1300, response=450, thoughts=136,
                               prompt_details=[("TEXT", 700), ("AUDIO", 600)], response_details=[("AUDIO", 450)])
    assert counts == TokenCounts(text_in=700, audio_in=600, audio_out=450, thoughts=136)
    assert counts.total == 1300 + 450 + 136


def test_tokens_without_details_are_priced_as_audio():
    """What the server does not break down is billed at the dearer audio rate: the meter never under-reports."""
    counts = split_by_modality(prompt=80, response=40)
    assert counts == TokenCounts(audio_in=80, audio_out=40)
    partly = split_by_modality(prompt=100, response=50, prompt_details=[("TEXT", 30)], tool_use_prompt=12)
    assert partly == TokenCounts(text_in=42, audio_in=70, audio_out=50)


def test_the_bill_is_the_sum_of_the_snapshots():
    """Summing per-turn snapshots (each re-billing the context) is the bill; the sum is what costs add up to."""
    turns = [TokenCounts(text_in=700, audio_in=150), TokenCounts(text_in=700, audio_in=412), TokenCounts(audio_out=112)]
    total = sum(turns, TokenCounts())
    assert total == TokenCounts(text_in=1400, audio_in=562, audio_out=112)
    assert total.cost(Prices()) == pytest.approx(sum(t.cost(Prices()) for t in turns))


def test_simulation_reproduces_the_published_estimate():
    """§D of the Live facts: $0.73 per 10 min and $5.96 per 30 with the default window; 16k/8k $3.70, 8k/4k $2.03."""
    assert simulate_session(10).cost == pytest.approx(0.73, abs=0.01)
    assert simulate_session(30).cost == pytest.approx(5.96, abs=0.01)
    assert simulate_session(30, Compression(16_000, 8_000)).cost == pytest.approx(3.70, abs=0.03)
    assert simulate_session(30, Compression(8_000, 4_000)).cost == pytest.approx(2.03, abs=0.02)


def test_default_window_is_never_reached_in_thirty_minutes():
    """The service's own trigger (80 % of the context) is far above what 30 minutes of talk holds."""
    estimate = simulate_session(30)
    assert estimate.compressions == 0 and estimate.memory_after_cut_s is None
    assert estimate.peak_context_tokens < SERVICE_DEFAULT_TRIGGER


def test_compression_keeps_the_context_under_the_trigger():
    """With a trigger, no turn's prompt exceeds it, and each cut leaves about `target` tokens."""
    estimate = simulate_session(30, Compression(8_000, 4_000))
    assert estimate.peak_context_tokens <= 8_000
    assert estimate.compressions >= 5
    assert 0 < estimate.memory_after_cut_s * 25 <= 4_000


def test_the_bots_default_is_cheaper_and_still_remembers_minutes():
    """The configured window costs about a third of the default over 30 minutes and keeps ≥ 3 minutes of talk."""
    chosen = Compression(DEFAULT_COMPRESSION_TRIGGER, DEFAULT_COMPRESSION_TARGET)
    before, after = simulate_session(30), simulate_session(30, chosen)
    assert after.cost < before.cost / 2.5
    assert after.memory_after_cut_s / 42 >= 2.9  # 42 s of audio per minute of conversation


def test_bad_compression_is_refused():
    """A target at or above the trigger is a mistake, not a setting."""
    with pytest.raises(ValueError, match="below trigger"):
        Compression(4_000, 8_000)


def test_target_must_be_below_trigger_in_settings():
    """The settings refuse the same mistake with one sentence naming the variable."""
    from bot.config import ConfigError

    with pytest.raises(ConfigError, match="GEMINI_COMPRESSION_TARGET_TOKENS is not valid"):
        load_settings(discord_token="t", gemini_api_key="k", gemini_compression_target_tokens=9_000)


@pytest.mark.parametrize(("amount", "text"), [(0, "$0.00"), (0.0042, "$0.0042"), (0.731, "$0.73"), (12.4, "$12.40")])
def test_dollars_are_readable(amount, text):
    """Small amounts keep enough digits not to read as zero."""
    assert dollars(amount) == text


def test_the_command_prints_before_and_after(capsys):
    """`python -m bot.cost` prints cost per 10 and 30 minutes for the default and the chosen window."""
    main([])
    out = capsys.readouterr().out
    assert "SlidingWindow() (service default)" in out and "$5.96" in out and "$2.02" in out
    assert "trigger 8,000 / target 4,000" in out
    assert "10 min" in comparison([Compression()], [10])
