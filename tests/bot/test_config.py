"""Settings, the CLI's start-up failures and logging hygiene (doctor: test_doctor.py)."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings
from bot.log import KeyValueFormatter, SecretScrubber, setup_logging

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-test-SECRET-value-1234567890"


@pytest.fixture
def clean_env(tmp_path):
    """The test's own empty working directory (tests/conftest.py already stripped the user's variables)."""
    assert Path.cwd() == tmp_path
    return tmp_path


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "GEMINI_"))}
    return subprocess.run([sys.executable, "-m", "bot", *args], env={**base, "PYTHONPATH": str(ROOT), **env},
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def test_defaults_match_the_design(clean_env):
    """Model, voice, API version and database path default to the design card's values."""
    settings = load_settings(discord_token="t", gemini_api_key="k")
    assert settings.gemini_model == "gemini-3.8-live"
    assert settings.gemini_voice == "Charon"
    assert settings.gemini_api_version == "v1beta"
    assert settings.database_path == Path("data/tutor.sqlite3")
    assert settings.gemini_base_url is None


def test_missing_secret_is_one_sentence_naming_the_variable(clean_env):
    """A missing token names DISCORD_TOKEN and .env, nothing more."""
    with pytest.raises(ConfigError) as caught:
        load_settings(gemini_api_key="k")
    assert "DISCORD_TOKEN is not set" in str(caught.value)
    assert ".env" in str(caught.value)


def test_blank_secret_is_reported_missing_without_echoing_values(clean_env):
    """A key that is only spaces counts as not set; the message never contains any secret value."""
    with pytest.raises(ConfigError) as caught:
        load_settings(discord_token=SECRET, gemini_api_key="   ")
    assert str(caught.value).startswith("GEMINI_API_KEY is not set: put an API key from Google AI Studio")
    assert SECRET not in str(caught.value)


OPTIONAL = [name for name, field in Settings.model_fields.items() if not field.is_required()]


@pytest.mark.parametrize("blank", ["", "   "])
@pytest.mark.parametrize("name", OPTIONAL)
def test_blank_optional_value_means_unset(clean_env, name, blank):
    """`NAME=` (or only spaces) in .env leaves every optional setting at its default."""
    (clean_env / ".env").write_text(f"DISCORD_TOKEN=abc\nGEMINI_API_KEY=def\n{name.upper()}={blank}\n")
    assert getattr(load_settings(), name) == Settings.model_fields[name].default


def test_env_example_works_as_copied(clean_env):
    """.env.example copied with only the two secrets filled in gives exactly the defaults."""
    example = (ROOT / ".env.example").read_text()
    filled = example.replace("DISCORD_TOKEN=\n", "DISCORD_TOKEN=abc\n")
    filled = filled.replace("GEMINI_API_KEY=\n", "GEMINI_API_KEY=def\n")
    assert filled != example
    (clean_env / ".env").write_text(filled)
    settings = load_settings()
    for name in OPTIONAL:
        assert getattr(settings, name) == Settings.model_fields[name].default, name
    assert settings.discord_token.get_secret_value() == "abc"


def test_env_example_names_every_setting():
    """Every setting appears in .env.example (as a line or a commented line), so a parent can find it."""
    example = (ROOT / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"{name.upper()}=" in example, name


def test_blank_environment_variable_does_not_hide_the_env_file(clean_env, monkeypatch):
    """An exported but empty DISCORD_TOKEN falls through to the value in .env."""
    (clean_env / ".env").write_text("DISCORD_TOKEN=from-file\nGEMINI_API_KEY=def\n")
    monkeypatch.setenv("DISCORD_TOKEN", "")
    assert load_settings().discord_token.get_secret_value() == "from-file"


BAD_VALUES = [
    ("DEV_GUILD_ID", "my server", "a server id, a long number such as 123456789012345678"),
    ("DEV_GUILD_ID", "-5", "a server id"),
    ("LOG_LEVEL", "LOUD", "one of DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    ("LOG_FORMAT", "xml", "text or json"),
    ("GEMINI_BASE_URL", "localhost:9000", "a web address starting with https://"),
    ("SSL_CERT_FILE", "/no/such/ca.pem", "the path of an existing certificate (PEM) file"),
]


@pytest.mark.parametrize(("name", "value", "valid"), BAD_VALUES)
def test_bad_value_is_one_plain_sentence(clean_env, name, value, valid):
    """A bad value: one sentence naming the variable and a valid value, no pydantic wording, no echo."""
    (clean_env / ".env").write_text(f"DISCORD_TOKEN={SECRET}\nGEMINI_API_KEY=def\n{name}={value}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{name} is not valid: it should be {valid}")
    assert message.endswith("fix it in .env (see .env.example) or the environment.")
    assert "\n" not in message and message.count(": ") == 1
    for word in ("Input should", "validation error", "type=", "pydantic", "errors.pydantic.dev", value, SECRET):
        assert word not in message


def test_every_setting_says_what_a_valid_value_looks_like():
    """Each field carries the description the error sentence quotes."""
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_case_of_log_settings_does_not_matter(clean_env):
    """log_level=debug and LOG_FORMAT=JSON are understood."""
    settings = load_settings(discord_token="t", gemini_api_key="k", log_level="debug", log_format="JSON")
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")


def test_secrets_hidden_in_repr(clean_env):
    """repr/str of the settings never show a secret."""
    settings = load_settings(discord_token=SECRET, gemini_api_key=SECRET)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def test_env_file_is_read(clean_env):
    """Settings come from .env in the working directory."""
    (clean_env / ".env").write_text("DISCORD_TOKEN=abc\nGEMINI_API_KEY=def\nGEMINI_VOICE=Puck\n")
    settings = load_settings()
    assert settings.gemini_voice == "Puck" and settings.discord_token.get_secret_value() == "abc"


def test_cli_without_secrets_exits_with_a_sentence(tmp_path):
    """`python -m bot` with no .env prints one sentence on stderr, no traceback, exit 78."""
    result = run_cli(env={}, cwd=tmp_path)
    assert result.returncode == 78
    assert "DISCORD_TOKEN is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_log_lines_are_key_value_and_scrubbed():
    """A log line carries its extra fields, and a secret in a message is replaced by ***."""
    record = logging.LogRecord("bot.x", logging.INFO, __file__, 1, "live.failed key=%s", (SECRET,), None)
    record.guild_id = 42
    line = KeyValueFormatter(SecretScrubber([SECRET])).format(record)
    assert SECRET not in line and "***" in line and "guild_id=42" in line


def test_setup_logging_is_idempotent():
    """Calling setup twice leaves one handler of ours on the root logger."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        setup_logging("INFO")
        setup_logging("DEBUG", "json")
        ours = [h for h in root.handlers if getattr(h, "_tutor_handler", False)]
        assert len(ours) == 1
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_settings_class_never_built_at_import():
    """Importing the package builds no Settings (no import-time side effects)."""
    code = "import bot.config, bot.log, bot.doctor; import sys; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "DISCORD_TOKEN": "", "GEMINI_API_KEY": ""}, timeout=30)
    assert result.stdout.strip() == "ok", result.stderr
    assert Settings.model_fields["discord_token"].is_required()


def run_bot_offline(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m bot` with discord.py's API base at a closed local port, as on a machine that is offline."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = (f"import sys, discord.http; discord.http.Route.BASE = 'http://127.0.0.1:{port}/api/v10'; "
            "from bot.__main__ import main; sys.exit(main([]))")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "GEMINI_"))}
    return subprocess.run([sys.executable, "-c", code], env={**base, "PYTHONPATH": str(ROOT), **env},
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def test_bot_offline_says_it_could_not_reach_discord(tmp_path):
    """Offline start: one sentence naming Discord (not the database), exit 69, no traceback."""
    result = run_bot_offline(tmp_path, {"DISCORD_TOKEN": "abc", "GEMINI_API_KEY": "def"})
    assert result.returncode == 69
    assert result.stderr == ("Cannot start: the bot could not reach Discord (discord.com): check that this "
                             "machine is online.\n")
    assert "Traceback" not in result.stdout


def test_bot_with_unusable_database_says_so(tmp_path):
    """A DATABASE_PATH under a file: one sentence about the database folder, Discord never tried."""
    (tmp_path / "a-file").write_text("x")
    result = run_bot_offline(tmp_path, {"DISCORD_TOKEN": "abc", "GEMINI_API_KEY": "def",
                                        "DATABASE_PATH": str(tmp_path / "a-file" / "db.sqlite3")})
    assert result.returncode == 69
    assert result.stderr.startswith("Cannot start: the bot cannot create the folder ")
    assert "check DATABASE_PATH" in result.stderr and "Discord" not in result.stderr


def test_bot_with_an_unreachable_postgres_server_says_so_in_words(tmp_path):
    """DATABASE_URL pointing where nothing answers: one sentence naming the address, no driver wording, no password."""
    result = run_bot_offline(tmp_path, {"DISCORD_TOKEN": "abc", "GEMINI_API_KEY": "def",
                                        "DATABASE_URL": "postgresql://tutor:pw-not-shown@127.0.0.1:1/tutor"})
    assert result.returncode == 69
    assert result.stderr.strip() == ("Cannot start: the bot cannot use PostgreSQL: nothing answered at 127.0.0.1:1: "
                                     "check the address in DATABASE_URL and that the server is running.")
