"""Uploading a policy through the API: metadata overrides are untrusted JSON."""

from __future__ import annotations

import json

import pytest

from tests.services.conftest import auth

pytestmark = pytest.mark.integration

# Its own policy id and a topic no other API test asks about, so the shared stack's answers stay as they were.
PARKING_MD = """---
policy_id: TEST-PARK
title: Staff Car Parking Policy
version: "1.0"
effective_date: 2026-02-01
classification: internal
owner: Head of Facilities
---
# Staff Car Parking Policy
## 1. Permits
1.1 Parking permits for the head office basement are issued by Facilities for one calendar year.
"""


def upload(client, stack, data: bytes, metadata: object, name: str = "parking.md", media_type: str = "text/markdown"):
    return client.post("/v1/documents", headers=auth(stack, "admin"),
                       files={"file": (name, data, media_type)}, data={"metadata": json.dumps(metadata)})


def test_null_and_empty_overrides_leave_the_documents_own_metadata(client, stack):
    # str(None) used to publish the title "None" and the owner "None".
    r = upload(client, stack, PARKING_MD.encode(), {"title": None, "owner": None, "version": ""})
    assert r.status_code == 201, r.text
    assert (r.json()["policy_id"], r.json()["version"]) == ("TEST-PARK", "1.0")
    listed = client.get("/v1/documents/TEST-PARK/versions", headers=auth(stack, "admin")).json()
    assert [(v["title"], v["owner"]) for v in listed] == [("Staff Car Parking Policy", "Head of Facilities")]


def test_a_null_override_does_not_fill_a_missing_field(client, stack):
    untitled = PARKING_MD.replace("title: Staff Car Parking Policy\n", "").replace("# Staff Car Parking Policy\n", "")
    r = upload(client, stack, untitled.replace("TEST-PARK", "TEST-PARK-UNTITLED").encode(), {"title": None})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "document_rejected"
    assert "missing metadata: title" in r.json()["detail"]


@pytest.mark.parametrize("value", [["Parking"], {"text": "Parking"}, True])
def test_an_override_that_is_not_text_is_rejected_naming_the_field(client, stack, value):
    r = upload(client, stack, PARKING_MD.replace("TEST-PARK", "TEST-PARK-BAD").encode(), {"title": value})
    assert r.status_code == 422, r.text
    assert "invalid metadata: title" in r.json()["detail"]
    assert client.get("/v1/documents/TEST-PARK-BAD/versions", headers=auth(stack, "admin")).status_code == 404


def test_html_declaring_utf8_with_a_bad_byte_is_422_naming_where(client, stack):
    # It was refused as "binary data", which told the uploader nothing they could fix.
    html = (b'<html><head><meta charset="utf-8"><meta name="policy_id" content="TEST-PARK-HTML">'
            b'<title>Staff Car Parking Policy</title></head>\n<body><p>1.1 Permits cost \xe2\x82\xb9500.</p>\n'
            b"<p>1.2 Visitors park at the caf\xe9.</p></body></html>")
    overrides = {"version": "1.0", "effective_date": "2026-02-01", "classification": "internal",
                 "owner": "Head of Facilities"}
    offset = html.index(b"\xe9")
    r = upload(client, stack, html, overrides, name="parking.html", media_type="text/html")
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "document_rejected"
    assert r.json()["detail"] == (
        "parking.html: not valid UTF-8: the file declares UTF-8 but its first invalid byte sequence is on line 3 "
        f"at byte offset {offset} (0xe9); save the file as UTF-8 and upload it again"
    )
    assert client.get("/v1/documents/TEST-PARK-HTML/versions", headers=auth(stack, "admin")).status_code == 404
