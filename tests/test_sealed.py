"""The suite is sealed from the user's `.env` and environment (tests/conftest.py does the sealing).

A parent runs `scripts/test` from the folder that holds their real `.env`; nothing in it, nor anything
exported in their shell, may change a test's outcome.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from tests.conftest import sealed_variables

ROOT = Path(__file__).resolve().parents[1]

# Every setting wrong in a way that would fail or redirect a test that read it.
HOSTILE = {
    "DISCORD_TOKEN": "hostile-discord-token",
    "GEMINI_API_KEY": "hostile-gemini-key",
    "GEMINI_MODEL": "no-such-model",
    "GEMINI_VOICE": "Nobody",
    "GEMINI_BASE_URL": "https://127.0.0.1:9",
    "GEMINI_API_VERSION": "v0",
    "GEMINI_SUMMARY_MODEL": "no-such-summary-model",
    "DATABASE_PATH": "/proc/no-such-folder/tutor.sqlite3",
    "DEV_GUILD_ID": "not a number",
    "LOG_LEVEL": "LOUD",
    "LOG_FORMAT": "xml",
    "SSL_CERT_FILE": "/no/such/ca.pem",
    "DATABASE_URL": "postgresql://hostile:hostile-db-password@127.0.0.1:9/nothing",
    "SHARD_COUNT": "0",
    "SHARD_IDS": "7-3",
}
# What only the environment can carry: the SDK's own variables and proxies.
HOSTILE_ENVIRONMENT = {
    **HOSTILE,
    "GOOGLE_API_KEY": "hostile-google-key",
    "GOOGLE_GENAI_USE_VERTEXAI": "true",
    "GOOGLE_CLOUD_PROJECT": "hostile-project",
    "GOOGLE_GEMINI_BASE_URL": "https://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "ALL_PROXY": "socks5://127.0.0.1:9",
}
# Tests that build Settings, start the CLI in subprocesses, talk to the fake servers and open databases.
PROBES = ["tests/bot/test_config.py", "tests/bot/live/test_check.py", "tests/bot/test_summary.py"]


def test_every_hostile_variable_is_sealed():
    """The conftest strips each of the variables above (and every Settings field's)."""
    names = {**HOSTILE_ENVIRONMENT, **{name.upper(): "x" for name in Settings.model_fields}}
    assert set(sealed_variables(names)) == set(names)
    assert not sealed_variables(dict(os.environ))


def test_settings_in_a_test_ignore_the_working_directory():
    """A test's working directory is its own, so `load_settings()` never sees the user's `.env`."""
    assert not Path(".env").exists()
    assert Path.cwd() != ROOT
    settings = load_settings(discord_token="t", gemini_api_key="k")
    assert settings.gemini_base_url is None and settings.dev_guild_id is None


@pytest.mark.timeout(240)  # it runs three test modules in a subprocess (which has the same bound)
def test_hostile_env_file_and_environment_change_no_outcome(tmp_path):
    """pytest run from a folder with a hostile `.env` and a hostile shell: every probed test still passes."""
    (tmp_path / ".env").write_text("".join(f"{name}={value}\n" for name, value in HOSTILE.items()))
    env = {**os.environ, **HOSTILE_ENVIRONMENT}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml"), *(str(ROOT / probe) for probe in PROBES)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert re.fullmatch(r"\d+ passed in [\d.]+s( \(.*\))?", summary), summary
    assert int(summary.split()[0]) > 60  # the probes really ran
