"""A local OpenAI-compatible endpoint: `python -m llama_cpp.server` on a GGUF, as a child process.

It stands in for a Tier-2 on-prem endpoint where none is deployed: the test suite and
`policyhub bench tiering` start one on the bundled GGUF, send it real HTTP requests through
the same `OpenAICompatibleGenerator` as any endpoint, and stop it when they are done.

The child asks the kernel to stop it when its parent dies (Linux `PR_SET_PDEATHSIG`; strictly,
when the thread that started it ends, which holds the context until it is done): a bench
killed with SIGTERM runs no `finally`, and its server would otherwise stay behind holding a
port and the model's memory. The child sets this on itself (`_CHILD`), not through
`preexec_fn`, which is unsafe in a parent with threads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 10
# Run as `python -c _CHILD <parent pid> <server args...>`: die with the parent, then be the server.
_CHILD = """
import ctypes, os, runpy, signal, sys
parent = int(sys.argv[1])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass  # not Linux: the parent's own cleanup still stops the server
if os.getppid() != parent:
    sys.exit("llama_cpp.server: the process that started it has already exited")
sys.argv = ["llama_cpp.server", *sys.argv[2:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


class LlamaServerError(Exception):
    """The server exited, or did not answer `/v1/models`, before it was ready."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_llama_server(model_path: Path, *, model_alias: str, n_ctx: int = 2048, n_threads: int = 1,
                         log_path: Path | None = None, start_timeout_s: float = START_TIMEOUT_S) -> Iterator[str]:
    """Start the server, yield its base URL ("http://127.0.0.1:<port>/v1") once it answers, stop it on exit.

    The server's output goes to `log_path` (a temporary file when not given); its tail is in the
    error when the server fails to start.
    """
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        log_path = log_path or Path(tmp) / "server.log"
        port = free_port()
        command = [sys.executable, "-c", _CHILD, str(os.getpid()), "--model", str(model_path), "--host", "127.0.0.1",
                   "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
                   "--n_threads_batch", str(n_threads), "--model_alias", model_alias]
        # Passive OpenMP waiting for the same reason as the in-process generator (services.generation.llama).
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            _wait_until_ready(process, base_url, log_path, start_timeout_s)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)


def _wait_until_ready(process: subprocess.Popen, base_url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise LlamaServerError(f"llama_cpp.server exited with {process.returncode}:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise LlamaServerError(f"llama_cpp.server did not answer {base_url}/models within {timeout_s:g} s")
        time.sleep(0.25)
