"""`policyhub audit verify`, `GET /v1/audit/verify` and the compliance page `/audit/verify` verify
every audit chain, on SQLite and PostgreSQL: each reports every chain's records, head and first bad
seq, and fails when any chain is broken, naming it, even while the main chain holds.

One file for the three surfaces: they share the database set-up and must agree on it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, update
from typer.testing import CliRunner

from governance.audit import append, chain_head, checkpoint_moved_chains
from services.api.app import create_app
from services.cli import app as cli_app
from services.config import Settings, get_settings
from services.db.session import transaction
from services.runtime import build_runtime
from services.users.service import create_user
from services.web.session import SESSION_COOKIE, start_session
from tests.governance.test_audit_tamper import T, as_db_owner, entry

pytestmark = pytest.mark.integration


@dataclass
class Hub:
    settings: Settings
    runtime: object
    client: TestClient
    keys: dict[str, str]

    def fill(self, **counts: int) -> None:
        for chain, n in counts.items():
            for i in range(1, n + 1):
                with self.runtime.session_factory.begin() as session:
                    append(session, entry(i), chain)

    def checkpoint(self) -> None:
        """What the running server does every interval: sign each chain whose head moved."""
        key = self.settings.audit_hmac_key.get_secret_value().encode()
        round_ = checkpoint_moved_chains(self.runtime.session_factory, key, self.settings.checkpoint_file)
        assert round_.written and not round_.refused

    def heads(self) -> dict[str, int]:
        with self.runtime.session_factory() as session:
            return {chain: chain_head(session, chain)[0] for chain in ("main", "other", "third")}

    def api(self, who: str = "compliance") -> dict:
        response = self.client.get("/v1/audit/verify", headers={"Authorization": f"Bearer {self.keys[who]}"})
        assert response.status_code == 200, response.text
        return response.json()

    def page(self) -> str:
        with transaction(self.runtime.session_factory) as db:
            cookie = start_session(db, self.settings.session_secret.get_secret_value(), self.keys["compliance"])[1]
        response = self.client.get("/audit/verify", headers={"cookie": f"{SESSION_COOKIE}={cookie}"},
                                   follow_redirects=False)
        assert response.status_code == 200, response.text
        return response.text

    def cli(self):  # noqa: ANN201
        return CliRunner().invoke(cli_app, ["audit", "verify"], env={"COLUMNS": "400"})


@pytest.fixture
def hub(db_url, tmp_path, monkeypatch) -> Iterator[Hub]:
    settings = Settings(env="test", data_dir=tmp_path / "data", database_url=db_url)
    runtime = build_runtime(settings, with_models=False)
    app = create_app(settings, runtime=runtime)
    # Verifying needs only the database and the checkpoint file; the lifespan would first load every model.
    app.state.runtime = runtime
    keys = {}
    with transaction(runtime.session_factory) as db:
        for name in ("compliance", "staff"):
            _, keys[name] = create_user(db, name, name, "internal", runtime.policy.classifications)
    # The CLI builds its own runtime from the environment: the same database and data dir.
    monkeypatch.setenv("POLICYHUB_ENV", "test")
    monkeypatch.setenv("POLICYHUB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("POLICYHUB_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield Hub(settings, runtime, TestClient(app), keys)
    get_settings.cache_clear()
    runtime.close()


def page_rows(page: str) -> dict[str, tuple[str, list[str]]]:
    """chain -> (row class, cell texts) from the page's chains table."""
    rows = re.findall(r'<tr class="(\w+)" data-chain="([^"]*)">(.*?)</tr>', page, re.DOTALL)
    return {html.unescape(chain): (status, [html.unescape(cell.strip()) for cell in
                                            re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", cells, re.DOTALL)])
            for status, chain, cells in rows}


def api_chains(body: dict) -> dict[str, tuple]:
    return {c["chain"]: (c["ok"], c["records"], c["head_seq"], c["first_bad_seq"]) for c in body["chains"]}


def test_every_intact_chain_is_reported_ok_with_its_own_counts(hub):
    hub.fill(main=2, other=3, third=1)
    hub.checkpoint()
    heads = hub.heads()
    assert heads["other"] == 3 and heads["third"] == 1 and heads["main"] >= 2

    body = hub.api()
    assert body["ok"] is True
    assert api_chains(body) == {"main": (True, heads["main"], heads["main"], None), "other": (True, 3, 3, None),
                                "third": (True, 1, 1, None)}
    assert [c["chain"] for c in body["chains"]] == ["main", "other", "third"]
    # The top-level fields stay the main chain's, as before there was more than one.
    assert (body["records"], body["head_seq"], body["first_bad_seq"], body["reason"]) == (
        heads["main"], heads["main"], None, None)
    assert body["head_hash"] == body["chains"][0]["head_hash"]
    assert body["checkpoints"] == 3

    result = hub.cli()
    assert result.exit_code == 0, result.output
    assert "chain other: OK, 3 records, head seq 3" in result.output
    assert "chain third: OK, 1 records, head seq 1" in result.output
    assert f"audit chain OK: 3 chains, {heads['main'] + 4} records, 3 checkpoints checked" in result.output

    page = hub.page()
    assert "✔ Chain intact" in page and "BROKEN" not in page
    rows = page_rows(page)
    assert list(rows) == ["main", "other", "third"]
    assert rows["other"][0] == "ok" and rows["other"][1][2:4] == ["3", "3"]
    assert rows["third"][0] == "ok" and rows["third"][1][2:4] == ["1", "1"]


def test_a_tampered_second_chain_is_reported_broken_by_name_while_main_holds(hub):
    hub.fill(main=2, other=4)
    with as_db_owner(hub.runtime.engine) as conn:
        conn.execute(update(T).where(T.c.chain == "other", T.c.seq == 2).values(question="edited"))

    body = hub.api()
    assert body["ok"] is False
    chains = api_chains(body)
    assert chains["main"][0] is True and chains["other"] == (False, 4, 4, 2)
    assert "seq 2 does not match its hash" in body["chains"][1]["reason"]
    assert (body["first_bad_seq"], body["reason"]) == (None, None)  # the main chain's, and it holds

    result = hub.cli()
    assert result.exit_code == 1, result.output
    assert "chain other: BROKEN at seq 2, 4 records, head seq 4: seq 2 does not match its hash" in result.output
    assert re.search(r"chain main: OK, \d+ records", result.output)
    assert "audit chain BROKEN 1 of 2 chains: other" in result.output

    page = hub.page()
    assert "✘ Chain BROKEN" in page and "1 of 2 chains broken: other" in page
    rows = page_rows(page)
    assert rows["main"][0] == "ok"
    status, cells = rows["other"]
    assert status == "broken" and cells[1] == "✘ BROKEN" and cells[5] == "2"
    assert "seq 2 does not match its hash" in cells[6]


def test_a_checkpointed_chain_whose_rows_were_all_deleted_is_reported_broken(hub):
    hub.fill(main=1, other=3)
    hub.checkpoint()
    with as_db_owner(hub.runtime.engine) as conn:
        conn.execute(delete(T).where(T.c.chain == "other"))

    body = hub.api()
    assert body["ok"] is False
    assert api_chains(body)["other"] == (False, 0, 0, 1)
    assert "records 1..3 were deleted" in body["chains"][1]["reason"]

    result = hub.cli()
    assert result.exit_code == 1, result.output
    assert "chain other: BROKEN at seq 1, 0 records, head seq 0" in result.output
    assert "audit chain BROKEN 1 of 2 chains: other" in result.output

    rows = page_rows(hub.page())
    assert rows["other"][0] == "broken" and "records 1..3 were deleted" in rows["other"][1][6]


def test_staff_still_cannot_verify(hub):
    response = hub.client.get("/v1/audit/verify", headers={"Authorization": f"Bearer {hub.keys['staff']}"})
    assert response.status_code == 403
