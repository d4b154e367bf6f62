"""Settings: production refuses weak secrets, and no error message repeats a secret."""

from __future__ import annotations

import pytest

from services.config import Settings

pytestmark = pytest.mark.unit

STRONG = "s" * 32


def test_prod_refuses_default_empty_and_short_secrets():
    with pytest.raises(ValueError, match="POLICYHUB_AUDIT_HMAC_KEY"):
        Settings(env="prod", session_secret=STRONG)
    with pytest.raises(ValueError, match="POLICYHUB_SESSION_SECRET"):
        Settings(env="prod", audit_hmac_key=STRONG)
    for weak in ("", "short"):  # an empty HMAC key lets anyone re-sign a rewritten audit chain
        with pytest.raises(ValueError, match="POLICYHUB_AUDIT_HMAC_KEY"):
            Settings(env="prod", audit_hmac_key=weak, session_secret=STRONG)
        with pytest.raises(ValueError, match="POLICYHUB_SESSION_SECRET"):
            Settings(env="prod", audit_hmac_key=STRONG, session_secret=weak)
    assert Settings(env="prod", audit_hmac_key=STRONG, session_secret=STRONG).env == "prod"
    assert Settings(env="dev").env == "dev"  # dev keeps its defaults


def test_a_refused_configuration_does_not_repeat_the_secrets_given(monkeypatch):
    monkeypatch.setenv("POLICYHUB_ENV", "prod")
    monkeypatch.setenv("POLICYHUB_DATABASE_URL", "postgresql+psycopg://hub:db-password-1@db/hub")
    monkeypatch.setenv("POLICYHUB_AUDIT_HMAC_KEY", "audit-key-" + "a" * 32)
    with pytest.raises(ValueError) as refused:
        Settings()  # the session secret is missing
    assert "POLICYHUB_SESSION_SECRET" in str(refused.value)
    assert "db-password-1" not in str(refused.value) and "audit-key-" not in str(refused.value)

    monkeypatch.setenv("POLICYHUB_SESSION_SECRET", STRONG)
    monkeypatch.setenv("POLICYHUB_OPENAI_API_KEYS", '{"gpt": ["sk-live-key-123456"]}')
    with pytest.raises(ValueError) as malformed:
        Settings()
    assert "openai_api_keys" in str(malformed.value)
    assert "sk-live-key-123456" not in str(malformed.value)
