"""The local llama.cpp server child: it serves, and it does not outlive a parent killed without cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

PARENT = """
import sys
from pathlib import Path
from services.generation.llama_server import running_llama_server
with running_llama_server(Path(sys.argv[1]), model_alias="onprem-large") as url:
    print(url, flush=True)
    sys.stdin.read()  # wait to be killed
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return state[state.rindex(b")") + 2:].split()[0] != b"Z"


def test_a_parent_killed_by_sigterm_takes_its_server_with_it(smollm2_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(smollm2_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[3],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    server = None
    try:
        url = parent.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        assert httpx.get(f"{url}/models", timeout=5).status_code == 200  # it really serves
        [server] = _children(parent.pid)
        parent.send_signal(signal.SIGTERM)  # Python's default: exit at once, no finally, no cleanup
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(server), "the llama.cpp server outlived the process that started it"
    finally:
        if parent.poll() is None:
            parent.kill()
        if server is not None and _alive(server):  # the defect itself: do not leave it running
            os.kill(server, signal.SIGKILL)
