"""All settings in one place, read from the environment and `.env`.

Built once in `bot.__main__` and passed down; nothing here runs at import time. Secrets are
`SecretStr` so they never show up in a repr, a log line or a traceback.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_FIELDS = ("discord_token", "gemini_api_key")


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one sentence an operator can act on."""


class Settings(BaseSettings):
    """Every knob the bot has. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    discord_token: SecretStr
    gemini_api_key: SecretStr
    gemini_model: str = "gemini-3.8-live"
    gemini_voice: str = "Charon"
    gemini_base_url: str | None = None
    gemini_api_version: str = "v1beta"
    gemini_summary_model: str = "gemini-2.5-flash"
    database_path: Path = Path("data/tutor.sqlite3")
    # postgresql://user:password@host/db for several machines; unset: the SQLite file at DATABASE_PATH.
    database_url: SecretStr | None = None
    dev_guild_id: int | None = None
    log_level: str = "INFO"
    log_format: str = Field(default="text", pattern="^(text|json)$")

    @field_validator("discord_token", "gemini_api_key")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty")
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_database_url_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _known_database_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
                ("postgresql://", "postgres://", "sqlite://")):
            raise ValueError("must start with postgresql:// (or sqlite:///path)")
        return value

    @property
    def database_location(self) -> str:
        """What `Database.open` gets: DATABASE_URL when set, else the SQLite file at DATABASE_PATH."""
        return self.database_url.get_secret_value() if self.database_url else str(self.database_path)

    @field_validator("gemini_base_url", mode="before")
    @classmethod
    def _blank_url_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value

    def secret_values(self) -> list[str]:
        """The raw secrets, for the log filter that scrubs them (and for nothing else)."""
        values = [getattr(self, name) for name in SECRET_FIELDS]
        secrets = [v.get_secret_value() for v in values if v is not None]
        if self.database_url is not None:
            password = urlsplit(self.database_url.get_secret_value()).password
            secrets += [self.database_url.get_secret_value(), *([password] if password else [])]
        return secrets


class PartialSettings(Settings):
    """Settings where the secrets may be missing: `doctor` reports them instead of stopping."""

    discord_token: SecretStr | None = None  # type: ignore[assignment]
    gemini_api_key: SecretStr | None = None  # type: ignore[assignment]

    @field_validator("discord_token", "gemini_api_key", mode="before")
    @classmethod
    def _blank_is_missing(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


def load_settings(cls: type[Settings] = Settings, **overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one plain sentence without any values."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One sentence per problem, naming the variable, never echoing the input (it may be a secret)."""
    sentences = []
    for error in exc.errors(include_input=False, include_url=False):
        name = str(error["loc"][0]).upper() if error["loc"] else "a setting"
        if error["type"] == "missing":
            sentences.append(f"{name} is not set: add it to .env (see .env.example) or the environment.")
        else:
            reason = error["msg"].removeprefix("Value error, ")
            sentences.append(f"{name} {reason}: fix it in .env (see .env.example) or the environment.")
    return " ".join(sentences)
