"""All settings in one place, read from the environment and `.env`.

Built once in `bot.__main__` and passed down; nothing here runs at import time. Secrets are
`SecretStr` so they never show up in a repr, a log line or a traceback.

`.env.example` is meant to work as copied: a blank value (`DEV_GUILD_ID=`) means "not set", so the
default applies (or, for a secret, it is reported missing). Each field's `description` says what a
valid value looks like; a bad value becomes one sentence naming the variable and that description.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.shards import ShardScope, parse_shard_ids
from bot.storage.url import url_secrets

SECRET_FIELDS = ("discord_token", "gemini_api_key")
# Chosen with `python -m bot.cost`: a 30-minute session costs $2.02 instead of $5.96 with the service's
# default window, and the tutor still keeps the last 3–7 minutes of talk (names and topic are in the
# instruction, which is never cut).
DEFAULT_COMPRESSION_TRIGGER = 8_000
DEFAULT_COMPRESSION_TARGET = 4_000
WHERE_TO_FIX = "in .env (see .env.example) or the environment"


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one sentence an operator can act on."""


class Settings(BaseSettings):
    """Every knob the bot has. Field names map to upper-case environment variables."""

    # env_ignore_empty: a blank line in the environment or .env is "not set", so the next source
    # (or the default) applies; values that are only spaces are dropped by `_blank_is_unset`.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      env_ignore_empty=True)

    discord_token: SecretStr = Field(
        description="the bot token from the Discord Developer Portal (your application → Bot → Reset Token)")
    gemini_api_key: SecretStr = Field(
        description="an API key from Google AI Studio (https://aistudio.google.com/apikey → Create API key)")
    gemini_model: str = Field("gemini-3.8-live", description="a Gemini Live model name such as gemini-3.8-live")
    gemini_voice: str = Field("Charon", description="a Gemini voice name such as Charon or Puck")
    gemini_base_url: str | None = Field(
        None, description="a web address starting with https:// (or left empty for Google's own)")
    gemini_api_version: str = Field("v1beta", description="an API version such as v1beta")
    gemini_summary_model: str = Field("gemini-2.5-flash", description="a Gemini text model such as gemini-2.5-flash")
    database_path: Path = Field(Path("data/tutor.sqlite3"), description="a file path such as data/tutor.sqlite3")
    database_url: SecretStr | None = Field(
        None, description="a PostgreSQL address such as postgresql://user:password@host:5432/tutor (or left empty "
        "for the SQLite file at DATABASE_PATH)")
    shard_count: int | None = Field(
        None, gt=0, description="the total number of shards, a whole number such as 2 (or left empty: Discord picks)")
    shard_ids: str | None = Field(
        None, description="the shards this process runs, a range such as 0-1 or a list such as 0,2 (each below "
        "SHARD_COUNT, which must be set too; or left empty for all of them)")
    dev_guild_id: int | None = Field(
        None, gt=0, description="a server id, a long number such as 123456789012345678 (or left empty)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="one of DEBUG, INFO, WARNING, ERROR or CRITICAL")
    log_format: Literal["text", "json"] = Field("text", description="text or json")
    ssl_cert_file: Path | None = Field(
        None, description="the path of an existing certificate (PEM) file (or left empty)")
    # Cost: the sliding window that bounds what each turn re-bills, and the price table (dollars per 1M
    # tokens, gemini-3.8-live paid tier, Sept 2026) the cost meter and the daily budget use.
    gemini_compression_trigger_tokens: int = Field(
        DEFAULT_COMPRESSION_TRIGGER, ge=1000, le=131_072,
        description="a whole number of tokens from 1000 to 131072, such as 8000")
    gemini_compression_target_tokens: int = Field(
        DEFAULT_COMPRESSION_TARGET, ge=500, le=131_072,
        description="a whole number of tokens below GEMINI_COMPRESSION_TRIGGER_TOKENS, such as 4000")
    gemini_price_audio_in_per_million: float = Field(
        3.00, ge=0, description="dollars per million audio input tokens, such as 3.00")
    gemini_price_audio_out_per_million: float = Field(
        12.00, ge=0, description="dollars per million audio output tokens, such as 12.00")
    gemini_price_text_in_per_million: float = Field(
        0.75, ge=0, description="dollars per million text input tokens, such as 0.75")
    gemini_price_text_out_per_million: float = Field(
        4.50, ge=0, description="dollars per million text output tokens, such as 4.50")

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, values: Any) -> Any:
        """Trim every value; a value that is only spaces counts as not set at all."""
        if not isinstance(values, dict):
            return values
        trimmed = {key: value.strip() if isinstance(value, str) else value for key, value in values.items()}
        return {key: value for key, value in trimmed.items() if value != ""}

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("gemini_base_url")
    @classmethod
    def _web_address(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("not a web address")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
                ("postgresql://", "postgres://", "sqlite://")):
            raise ValueError("not a postgresql:// address")
        return value

    @field_validator("shard_ids")
    @classmethod
    def _shard_range(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:  # SHARD_COUNT is validated first (it is declared first)
            ShardScope(info.data.get("shard_count"), parse_shard_ids(value))
        return value

    @property
    def shard_scope(self) -> ShardScope:
        """The shards this process runs (all of them unless SHARD_IDS says otherwise)."""
        ids = parse_shard_ids(self.shard_ids) if self.shard_ids else None
        return ShardScope(self.shard_count, ids)

    @property
    def database_location(self) -> str:
        """What `Database.open` gets: DATABASE_URL when set, else the SQLite file at DATABASE_PATH."""
        return self.database_url.get_secret_value() if self.database_url else str(self.database_path)

    @field_validator("ssl_cert_file")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError("no such file")
        return value

    @field_validator("gemini_compression_target_tokens")
    @classmethod
    def _target_below_trigger(cls, value: int, info: ValidationInfo) -> int:
        trigger = info.data.get("gemini_compression_trigger_tokens")
        if trigger is not None and value >= trigger:
            raise ValueError("not below the trigger")
        return value

    def export_to_process(self) -> None:
        """Put the settings that libraries read from the process environment there (SSL_CERT_FILE).

        google-genai and aiohttp read `SSL_CERT_FILE` from `os.environ` only; a value in .env reaches
        them through this call, which `bot.__main__` makes once after loading.
        """
        if self.ssl_cert_file is not None:
            os.environ["SSL_CERT_FILE"] = str(self.ssl_cert_file.expanduser())

    def secret_values(self) -> list[str]:
        """The raw secrets, for the log filter that scrubs them (and for nothing else)."""
        values = [getattr(self, name) for name in SECRET_FIELDS]
        secrets = [v.get_secret_value() for v in values if v is not None]
        if self.database_url is not None:  # the whole URL, and its passwords on their own
            secrets += [self.database_url.get_secret_value(), *url_secrets(self.database_url.get_secret_value())]
        return secrets


class PartialSettings(Settings):
    """Settings where the secrets may be missing: `doctor` reports them instead of stopping."""

    discord_token: SecretStr | None = Field(  # type: ignore[assignment]
        None, description=Settings.model_fields["discord_token"].description)
    gemini_api_key: SecretStr | None = Field(  # type: ignore[assignment]
        None, description=Settings.model_fields["gemini_api_key"].description)


class LiveCheckSettings(Settings):
    """Settings for `live-check`, which talks to Gemini only: the Discord token may be missing."""

    discord_token: SecretStr | None = Field(  # type: ignore[assignment]
        None, description=Settings.model_fields["discord_token"].description)


def load_settings(cls: type[Settings] = Settings, **overrides: object) -> Settings:
    """Build settings, turning pydantic's report into plain sentences without any values."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, cls)) from None


def describe_validation_error(exc: ValidationError, cls: type[Settings] = Settings) -> str:
    """One sentence per problem: the variable, what a valid value looks like, where to fix it.

    The input is never echoed (it may be a secret), and pydantic's own wording never shows.
    """
    sentences: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        if field not in cls.model_fields:
            sentences.append(f"A setting is not valid: fix it {WHERE_TO_FIX}.")
            continue
        name, valid = field.upper(), cls.model_fields[field].description
        if error["type"] == "missing":
            sentence = f"{name} is not set: put {valid} {WHERE_TO_FIX}."
        else:
            sentence = f"{name} is not valid: it should be {valid}; fix it {WHERE_TO_FIX}."
        if sentence not in sentences:
            sentences.append(sentence)
    return " ".join(sentences)
