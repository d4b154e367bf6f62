"""The running server's audit checkpoints: every `audit.checkpoint_interval_seconds` a
thread signs the head of each audit chain that moved, and once more at shutdown.

Records newer than the last checkpoint can still be cut off without detection; this
bounds that window by the interval instead of by whenever someone last ran `policyhub
audit checkpoint`. Each checkpoint goes to the checkpoint file and to the log
(`audit.checkpoint`), so a log pipeline holds a second copy off the machine. A chain that
no longer verifies is never signed: the round logs `audit.checkpoint_refused` and the
server keeps serving, trying again at the next interval.
"""

from __future__ import annotations

import threading
from pathlib import Path

import structlog
from sqlalchemy.orm import Session, sessionmaker

from governance.audit import CheckpointRound, checkpoint_moved_chains

log = structlog.get_logger()


class AuditCheckpointer:
    """A background thread with its own database sessions; `stop` ends it and signs the final heads."""

    def __init__(self, session_factory: sessionmaker[Session], key: bytes, path: Path, interval_seconds: int) -> None:
        self.session_factory, self.key, self.path = session_factory, key, path
        self.interval_seconds = interval_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_seconds <= 0:  # turned off in the policy
            return
        self._thread = threading.Thread(target=self._run, name="audit-checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        self.checkpoint_once()  # what was appended since the last round

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_seconds):
            self.checkpoint_once()

    def checkpoint_once(self) -> CheckpointRound | None:
        """One round; never raises, so neither the thread nor the server's shutdown dies of it."""
        try:
            result = checkpoint_moved_chains(self.session_factory, self.key, self.path)
        except Exception:  # the database or the file unreachable: say so, try again next round
            log.exception("audit.checkpoint_failed", file=str(self.path))
            return None
        for cp in result.written:
            # The whole signed checkpoint (the signature is not the key): a copy that verifies on its own.
            log.info("audit.checkpoint", chain=cp.chain, seq=cp.seq, head_hash=cp.head_hash, time=cp.time,
                     signature=cp.signature, file=str(self.path))
        for chain, reason in result.refused.items():
            log.error("audit.checkpoint_refused", chain=chain, reason=reason, file=str(self.path))
        return result
