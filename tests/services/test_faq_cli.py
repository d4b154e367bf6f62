"""`policyhub faq add|approve|retire|list` through the CLI runner, acting as named users."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.services.conftest import run_cli as run


CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
FAQ = {"questions": ["Within how many business days is a customer complaint acknowledged?"],
       "answer": "Every complaint is acknowledged to the customer within 2 business days of receipt.",
       "clauses": [{"policy_id": "TEST-CMP", "version": "3.1", "clause": "1.1"}]}

pytestmark = pytest.mark.integration


def test_add_approve_list_retire_as_named_users(tmp_path, data_dir):
    for args in (("db", "upgrade"), ("ingest", str(CORPUS / "complaints.md")),
                 ("users", "add", "ana", "--role", "admin"),
                 ("users", "add", "cleo", "--role", "compliance", "--clearance", "confidential"),
                 ("users", "add", "sam", "--role", "staff")):
        result = run(*args)
        assert result.exit_code == 0, result.output

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**FAQ, "answer": "Within 3 business days."}))
    result = run("faq", "add", str(bad), "--user", "ana")
    assert result.exit_code == 1
    assert "error (faq_rejected): the answer fails verification against its bound clauses: '3' does not appear" \
        in result.output
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({**FAQ, "answers": "typo"}))
    result = run("faq", "add", str(unknown), "--user", "ana")
    assert result.exit_code == 1 and "answers: Extra inputs are not permitted" in result.output

    good = tmp_path / "faq.yaml"
    good.write_text(yaml.safe_dump(FAQ))
    result = run("faq", "add", str(good), "--user", "cleo")
    assert result.exit_code == 1 and "error (forbidden)" in result.output
    result = run("faq", "add", str(good), "--user", "ana")
    assert result.exit_code == 0, result.output
    assert "FAQ 1 proposed (author ana): bound to TEST-CMP v3.1 clause 1.1" in result.output

    result = run("faq", "approve", "1", "--user", "ana")
    assert result.exit_code == 1 and "error (four_eyes_rule): four-eyes rule: FAQ 1 was written by ana" in result.output
    result = run("faq", "approve", "1")  # the CLI operator is not the author: may approve as admin
    assert result.exit_code == 0, result.output
    assert "FAQ 1 approved" in result.output

    result = run("faq", "list", "--user", "sam", "--json")
    assert result.exit_code == 0, result.output
    [listed] = json.loads(result.stdout)
    assert (listed["id"], listed["status"], listed["author"]) == (1, "approved", "ana")

    result = run("faq", "retire", "1", "--user", "cleo", "--reason", "reworded")
    assert result.exit_code == 0 and "FAQ 1 retired" in result.output
    result = run("faq", "list", "--user", "sam", "--json")
    assert json.loads(result.stdout) == []
    result = run("faq", "list", "--user", "cleo")
    assert result.exit_code == 0 and "retired" in result.output and "1 FAQs" in result.output


def test_demo_seeds_faqs_added_by_admin_approved_by_compliance_once(tmp_path, data_dir):
    import shutil

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(CORPUS / "complaints.md", corpus)
    faqs = tmp_path / "demo-faqs.yaml"
    faqs.write_text(yaml.safe_dump([FAQ]))
    for _ in range(2):  # running the demo again adds nothing
        result = run("demo", "--corpus", str(corpus), "--keys-file", str(tmp_path / "keys.json"), "--faqs", str(faqs))
        assert result.exit_code == 0, result.output
    result = run("faq", "list", "--user", "demo-staff", "--json")
    [entry] = json.loads(result.stdout)
    assert (entry["status"], entry["author"], entry["approver"]) == ("approved", "demo-admin", "demo-compliance")


def test_the_shipped_demo_faqs_parse():
    from services.cli import read_faq_file

    path = Path(__file__).resolve().parents[2] / "deploy" / "demo-faqs.yaml"
    assert [e.clauses[0].policy_id for e in read_faq_file(path)] == ["CMP-CH-001"]


def test_json_listing_is_stdout_alone_while_a_server_thread_logs(data_dir):
    """A server running in the same process (the API's audit checkpointer) logs at any moment;
    its lines go to stderr, and `--json` on stdout stays one parseable document."""
    import threading

    import structlog

    assert run("db", "upgrade").exit_code == 0
    stop = threading.Event()

    def checkpointer() -> None:
        while not stop.is_set():
            structlog.get_logger().info("audit.checkpoint", chain="main")
            stop.wait(0.001)

    thread = threading.Thread(target=checkpointer, daemon=True)
    thread.start()
    try:
        result = run("faq", "list", "--json")
    finally:
        stop.set()
        thread.join()
    assert result.exit_code == 0, result.output
    assert "audit.checkpoint" in result.stderr
    assert json.loads(result.stdout) == []
