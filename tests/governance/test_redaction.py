"""URLs shown in errors, logs and records keep their host and lose their credentials."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.redaction import REDACTED, redact_url, redact_urls

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("url", "shown"), [
    ("https://llm.bank.internal/v1", "https://llm.bank.internal/v1"),
    ("https://user:pa55word@llm.bank.internal:8443/v1", f"https://{REDACTED}@llm.bank.internal:8443/v1"),
    ("https://tok3n@llm.bank.internal/v1", f"https://{REDACTED}@llm.bank.internal/v1"),
    ("https://h/v1?api_key=abc123&region=in", f"https://h/v1?api_key={REDACTED}&region=in"),
    ("https://h/v1?region=in&access_token=abc123&X-Amz-Signature=f00d&sig=1",
     f"https://h/v1?region=in&access_token={REDACTED}&X-Amz-Signature={REDACTED}&sig={REDACTED}"),
    ("https://h/v1?client%5Fsecret=abc123", f"https://h/v1?client%5Fsecret={REDACTED}"),
    ("postgresql+psycopg://app:pw@db.internal/policyhub", f"postgresql+psycopg://{REDACTED}@db.internal/policyhub"),
    ("http://[::1", REDACTED),
])
def test_credentials_are_replaced_and_the_endpoint_kept(url, shown):
    assert redact_url(url) == shown


def test_urls_inside_text_are_redacted_and_the_rest_kept():
    text = ("model cloud@1: cannot reach https://u:pa55word@h/v1?key=abc123: Connection error "
            "(url='http://x:y@other/v1')")
    assert redact_urls(text) == (f"model cloud@1: cannot reach https://{REDACTED}@h/v1?key={REDACTED}: "
                                 f"Connection error (url='http://{REDACTED}@other/v1')")


@given(user=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12),
       password=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~", min_size=6, max_size=24))
def test_a_password_or_key_never_survives(user, password):
    for url in (f"https://{user}:{password}@host.example/v1", f"https://host.example/v1?api_key={password}"):
        shown = redact_urls(f"failed: {url}")
        assert password not in shown and "host.example/v1" in shown
