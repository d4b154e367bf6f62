"""The append-only, hash-chained audit store.

Every record carries `hash = SHA-256(prev_hash || canonical JSON of all its other
fields)`, so editing, deleting, inserting or reordering a stored row breaks the chain
at that row. A database owner can still rewrite the whole chain from some row on, or
cut off its tail; signed checkpoints kept outside the database catch both.

Appends are serialised per chain and never commit: the caller's transaction commits
the action and its audit record together, or neither.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path
from typing import Self
from uuid import UUID

from sqlalchemy import Connection, bindparam, select, text
from sqlalchemy.engine import processors
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler

from governance.errors import PolicyHubError
from governance.records.audit import AuditRecord

GENESIS_HASH = "0" * 64
MAIN_CHAIN = "main"

_TABLE = AuditRecord.__table__

# Every stored column except `hash` is hashed, in canonical (sorted) key order.
HASHED_FIELDS = (
    "actor", "actor_role", "chain", "channel", "cost", "created_at", "effective_classification", "event",
    "model_key", "payload", "pii_present", "policy_ids", "prev_hash", "question", "refused", "request_id",
    "seq", "tier",
)
assert list(HASHED_FIELDS) == sorted(HASHED_FIELDS)
_SEQ_AT = HASHED_FIELDS.index("seq")
_PAYLOAD_AT = HASHED_FIELDS.index("payload")
_PREV_HASH_AT = HASHED_FIELDS.index("prev_hash")
_BEFORE_PAYLOAD = HASHED_FIELDS[:_PAYLOAD_AT]
_AFTER_PAYLOAD = HASHED_FIELDS[_PAYLOAD_AT + 1 :]

# Column widths from migration 0001. SQLite would store longer values and PostgreSQL
# would refuse them, so they are checked here: one behaviour on both, and nothing truncated.
_MAX_LENGTHS = {"chain": 32, "request_id": 64, "event": 64, "actor": 200, "actor_role": 32, "channel": 32,
                "effective_classification": 32, "model_key": 200}

_VERIFY_BATCH = 5000  # rows a round trip from PostgreSQL
# Mapped for a verify read: ~500k records of the benchmark's size; the rest of a larger file is read as before.
_SQLITE_VERIFY_MMAP_BYTES = 1 << 30


class AuditChainBroken(PolicyHubError):
    status_code, error = 409, "audit_chain_broken"


# -- canonical JSON and the record hash --------------------------------------------


def iso_utc(value: datetime) -> str:
    """One spelling per instant: UTC, always microseconds, `Z`. Naive values are taken as UTC
    (SQLite hands back the UTC wall time the store wrote, without its offset)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    text = value.isoformat()  # omits the fraction when it is zero
    return text + "Z" if value.microsecond else text + ".000000Z"


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """`text` with any lone surrogate (not encodable as UTF-8) replaced by U+FFFD.

    JSON lets a client send "\\ud800"; such a string can be neither hashed nor stored as
    UTF-8, so the record keeps the replacement character instead of failing the request.
    """
    return text if text.isascii() or not _SURROGATE.search(text) else _SURROGATE.sub("\ufffd", text)


def _jsonable(obj: object) -> object:
    kind = type(obj)
    # Exact types first: this walk runs over every payload appended.
    if kind is str:
        return valid_text(obj)
    if kind is int or kind is bool or obj is None:
        return obj
    if kind is float:
        if not math.isfinite(obj):
            raise ValueError(f"canonical JSON has no NaN or infinity (got {obj!r})")
        return obj
    if kind is dict or isinstance(obj, Mapping):
        out: dict[str, object] = {}
        for key, value in obj.items():
            # json.dumps would sort int keys numerically and then print them as strings,
            # which sorts differently once read back; so keys become strings first.
            if type(key) is str:
                name = valid_text(key)
            elif isinstance(key, int) and not isinstance(key, bool):
                name = str(key)
            elif isinstance(key, str):
                name = str(key)
            else:
                raise TypeError(f"JSON object keys must be str or int, not {type(key).__name__}")
            if name in out:
                raise ValueError(f"two keys spell {name!r} once written as JSON")
            out[name] = _jsonable(value)
        return out
    if kind is list or kind is tuple:
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Enum):
        return _jsonable(obj.value)
    if isinstance(obj, (str, int, float)):  # subclasses: written as their plain value
        return _jsonable((str if isinstance(obj, str) else float if isinstance(obj, float) else int)(obj))
    if isinstance(obj, datetime):
        return iso_utc(obj)
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, UUID):
        return str(obj)
    # numpy scalars and arrays (retrieval scores) without importing numpy here.
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    raise TypeError(f"{type(obj).__name__} cannot be written to an audit record as JSON")


_CANONICAL = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical_json(obj: object) -> str:
    """Sorted keys, no whitespace, UTF-8 text, datetimes as ISO-8601 UTC, floats by repr, no NaN."""
    return _CANONICAL.encode(_jsonable(obj))


def record_hash(prev_hash: str, content: dict) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical_json(content).encode()).hexdigest()


def hashed_content(record: object) -> dict:
    """The hashed fields of a stored record (ORM object or row), payload parsed.

    An auditor recomputes `record_hash(record.prev_hash, hashed_content(record))` with
    nothing but this function and the row.
    """
    content = {name: getattr(record, name) for name in HASHED_FIELDS}
    content["payload"] = json.loads(content["payload"])
    return content


def _encode_float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"canonical JSON has no NaN or infinity (got {value!r})")
    return float.__repr__(value)


# How canonical_json writes each type a column hands back (json's own C functions where
# it has them). Anything else goes through canonical_json itself.
_SCALAR_ENCODERS = {
    str: json.encoder.encode_basestring,  # the ensure_ascii=False spelling
    int: int.__repr__,
    float: _encode_float,
    bool: lambda value: "true" if value else "false",
    type(None): lambda _: "null",
    datetime: lambda value: '"' + iso_utc(value) + '"',
}
# canonical_json of a record's content, cut where the payload goes.
_HEAD_TEMPLATE = "{" + "".join(f'"{name}":%s,' for name in _BEFORE_PAYLOAD) + '"payload":'
_TAIL_TEMPLATE = "".join(f',"{name}":%s' for name in _AFTER_PAYLOAD) + "}"
# prev_hash followed by canonical_json of a record's content, every value already written.
_ROW_TEMPLATE = "%s{" + ",".join(f'"{name}":%s' for name in HASHED_FIELDS) + "}"
_escape = json.encoder.encode_basestring  # C; refuses anything but str with TypeError


def _row_digest(values: Sequence) -> str:
    """`record_hash` of a stored row, fast enough to verify ~10^5 rows a second.

    `values` are the hashed fields in HASHED_FIELDS order as SQLAlchemy returns them.
    Every other field is written exactly as canonical_json would write it, and the
    stored payload text is fed in unparsed where canonical_json would put it: for every
    row the store wrote, that equals record_hash over the parsed payload. A payload
    re-serialised any other way no longer matches — deliberately, since the stored text
    is what compliance reads.

    The column types the store writes are written inline, one formatting call for the
    whole record (most of verify's time went into a Python call per field); a value of
    any other type, such as text typed into an integer column, takes the general path.
    """
    (actor, actor_role, chain, channel, cost, created_at, classification, event, model_key, payload,
     pii_present, policy_ids, prev_hash, question, refused, request_id, seq, tier) = values
    if (type(payload) is str and type(created_at) is datetime and type(cost) is float and math.isfinite(cost)
            and type(seq) is int and (tier is None or type(tier) is int)
            and type(refused) is bool and type(pii_present) is bool):
        try:
            written = _ROW_TEMPLATE % (
                prev_hash, _escape(actor), _escape(actor_role), _escape(chain), _escape(channel), cost,
                '"' + iso_utc(created_at) + '"', "null" if classification is None else _escape(classification),
                _escape(event), "null" if model_key is None else _escape(model_key), payload,
                "true" if pii_present else "false", _escape(policy_ids), _escape(prev_hash),
                "null" if question is None else _escape(question), "true" if refused else "false",
                _escape(request_id), seq, "null" if tier is None else tier)
        except TypeError:  # a text column holding something else
            pass
        else:
            return hashlib.sha256(written.encode()).hexdigest()
    return _general_row_digest(values)


def _general_row_digest(values: Sequence) -> str:
    """`_row_digest` for values of any type a column can hand back, one encoder per field."""
    payload = values[_PAYLOAD_AT]
    if type(payload) is not str:
        raise TypeError(f"payload is {type(payload).__name__}, not text")
    scalars = list(values)
    scalars[_PAYLOAD_AT] = None  # not encoded: spliced in as stored
    encoded = [_SCALAR_ENCODERS.get(type(value), canonical_json)(value) for value in scalars]
    digest = hashlib.sha256((values[_PREV_HASH_AT] + _HEAD_TEMPLATE % tuple(encoded[:_PAYLOAD_AT])).encode())
    digest.update(payload.encode())
    digest.update((_TAIL_TEMPLATE % tuple(encoded[_PAYLOAD_AT + 1 :])).encode())
    return digest.hexdigest()


# -- appending ----------------------------------------------------------------------


@dataclass
class AuditEntry:
    """What a caller appends; the store assigns seq, created_at, prev_hash and hash."""

    request_id: str
    event: str
    actor: str
    actor_role: str
    channel: str
    payload: dict
    question: str | None = None
    effective_classification: str | None = None
    tier: int | None = None
    model_key: str | None = None
    refused: bool = False
    pii_present: bool = False
    policy_ids: Sequence[str] = ()
    cost: float = 0.0


def _text(value: str | None) -> str | None:
    return None if value is None else valid_text(value)


def _policy_ids_column(policy_ids: Sequence[str]) -> str:
    if isinstance(policy_ids, str):
        raise TypeError("policy_ids is a sequence of policy ids, not one string")
    for pid in policy_ids:
        if not pid or any(ch.isspace() for ch in pid):
            raise ValueError(f"policy id {pid!r} is empty or contains whitespace (ids are stored space-separated)")
    return " ".join(policy_ids)


def _check_lengths(values: Mapping[str, object]) -> None:
    for name, limit in _MAX_LENGTHS.items():
        value = values[name]
        if value is not None and len(value) > limit:
            raise ValueError(f"audit field {name} is {len(value)} characters, the column holds {limit}")


def _lock_chain(session: Session, chain: str) -> None:
    """Take the chain's append lock until the caller's transaction ends.

    A write to the chain's row in audit_chain_locks is the lock on both backends:
    PostgreSQL holds a row lock until commit (under READ COMMITTED the next statement
    then sees the previous appender's record); SQLite grants its single write lock to
    the first write of a transaction and waits (busy timeout) for it. Writing before
    reading matters on SQLite: a deferred transaction that read first and then tries
    to write fails at once, without waiting, when another writer committed meanwhile.
    """
    session.execute(_LOCK_CHAIN, {"chain": chain})


_LOCK_CHAIN = text("INSERT INTO audit_chain_locks (chain) VALUES (:chain) "
                   "ON CONFLICT (chain) DO UPDATE SET chain = excluded.chain")
_CHAIN_HEAD = (select(_TABLE.c.seq, _TABLE.c.hash).where(_TABLE.c.chain == bindparam("chain"))
               .order_by(_TABLE.c.seq.desc()).limit(1))


def chain_head(session_or_conn: Session | Connection, chain: str = MAIN_CHAIN) -> tuple[int, str]:
    """(seq, hash) of the chain's last record; (0, GENESIS_HASH) when it is empty."""
    row = session_or_conn.execute(_CHAIN_HEAD, {"chain": chain}).first()
    return (row[0], row[1]) if row else (0, GENESIS_HASH)


def chain_names(session_or_conn: Session | Connection) -> list[str]:
    """Every chain with at least one record."""
    return list(session_or_conn.execute(select(_TABLE.c.chain).distinct().order_by(_TABLE.c.chain)).scalars())


def append(session: Session, entry: AuditEntry, chain: str = MAIN_CHAIN) -> AuditRecord:
    """Append one record to `chain` inside the caller's transaction (flushed, not committed).

    The chain stays locked until that transaction ends, so keep it short. On SQLite the
    transaction must not have read anything before its first write (a fresh session, one
    opened with BEGIN IMMEDIATE, or one that has already written are all fine): see
    _lock_chain. On PostgreSQL it expects READ COMMITTED (the default); under stricter
    isolation a concurrent append fails with a serialisation error instead of waiting.
    """
    payload_text = canonical_json(entry.payload)
    fields = {
        "chain": chain,
        "request_id": _text(entry.request_id),
        "event": _text(entry.event),
        "actor": _text(entry.actor),
        "actor_role": _text(entry.actor_role),
        "channel": _text(entry.channel),
        "question": _text(entry.question),
        "effective_classification": _text(entry.effective_classification),
        "tier": None if entry.tier is None else int(entry.tier),
        "model_key": _text(entry.model_key),
        "refused": bool(entry.refused),
        "pii_present": bool(entry.pii_present),
        "policy_ids": _policy_ids_column([valid_text(p) for p in entry.policy_ids]
                                         if not isinstance(entry.policy_ids, str) else entry.policy_ids),
        # + 0.0 turns -0.0 into 0.0: SQLite reads a stored -0.0 back as 0.0, which would
        # no longer match the hash.
        "cost": float(entry.cost) + 0.0,
    }
    _check_lengths(fields)
    if not math.isfinite(fields["cost"]):
        raise ValueError(f"audit cost must be finite, got {entry.cost!r}")

    _lock_chain(session, chain)
    head_seq, head_hash = chain_head(session, chain)
    # Microsecond precision is what both backends store, so the hash covers exactly
    # what will be read back.
    fields.update(seq=head_seq + 1, created_at=datetime.now(UTC), prev_hash=head_hash)
    content = dict(fields, payload=json.loads(payload_text))
    record = AuditRecord(**fields, payload=payload_text, hash=record_hash(head_hash, content))
    session.add(record)
    session.flush()
    return record


# -- verifying ----------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement "chain X had head H at seq N at this time", kept outside the database."""

    seq: int
    head_hash: str
    time: str
    chain: str
    signature: str

    def signed_content(self) -> str:
        return canonical_json({"chain": self.chain, "seq": self.seq, "head_hash": self.head_hash, "time": self.time})


@dataclass
class VerifyResult:
    ok: bool
    records: int
    first_bad_seq: int | None
    reason: str | None
    head_seq: int
    head_hash: str


def _connection(session_or_conn: Session | Connection) -> Connection:
    return session_or_conn.connection() if isinstance(session_or_conn, Session) else session_or_conn


def _trusted_checkpoints(checkpoints: Sequence[Checkpoint], key: bytes | None) -> tuple[list[Checkpoint], str | None]:
    """The checkpoints to compare against, and why any were left out.

    A checkpoint that fails its signature is evidence in itself (someone edited the file)
    but says nothing reliable about the chain, so it is reported and not used.
    """
    trusted, problems = [], []
    for cp in checkpoints:
        if key is not None and not verify_checkpoint_signature(cp, key):
            problems.append(f"checkpoint for seq {cp.seq} ({cp.time}) has an invalid signature")
        elif cp.seq < 0 or (cp.seq == 0 and cp.head_hash != GENESIS_HASH):
            problems.append(f"checkpoint for seq {cp.seq} ({cp.time}) is malformed")
        else:
            trusted.append(cp)
    if not problems:
        return trusted, None
    return trusted, "; ".join(problems) + ": the checkpoint file was altered"


# Untyped columns, so SQLAlchemy does no result processing of its own: _StoredChain
# converts just the columns that need it, and only for rows off the fast path.
_STORED_ROWS = text(f"SELECT {', '.join(HASHED_FIELDS)}, hash FROM {_TABLE.name} WHERE chain = :chain ORDER BY seq")
_STORED_ROWS_AFTER = text(f"SELECT {', '.join(HASHED_FIELDS)}, hash FROM {_TABLE.name} "
                          "WHERE chain = :chain AND seq > :after ORDER BY seq")
_HASH_AT_SEQ = select(_TABLE.c.hash).where(_TABLE.c.chain == bindparam("chain"), _TABLE.c.seq == bindparam("seq"))
_HASH_AT = len(HASHED_FIELDS)

# How SQLAlchemy writes a datetime into SQLite's text column (its DATETIME storage format);
# the rows the store wrote spell created_at exactly so.
_SQLITE_STORED_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}").fullmatch
# _ROW_TEMPLATE with created_at written from that text: date, "T", time, "Z".
_SQLITE_ROW_TEMPLATE = _ROW_TEMPLATE.replace('"created_at":%s', '"created_at":"%sT%sZ"')
assert _SQLITE_ROW_TEMPLATE.count('"%sT%sZ"') == 1


def _sqlite_row_digest(row: Sequence) -> str | None:
    """`_row_digest` of what a typed select returns for this raw SQLite row, or None when the
    row holds anything but the types the store writes (the caller then converts it and takes
    the general path).

    A typed select turns created_at's text into a datetime (datetime.fromisoformat) and
    iso_utc turns it back into text; for the exact spelling SQLAlchemy writes, that round
    trip is a respelling of the same digits, so it is done on the text. The booleans are
    stored as integers and read as their truth value.
    """
    (actor, actor_role, chain, channel, cost, created_at, classification, event, model_key, payload,
     pii_present, policy_ids, prev_hash, question, refused, request_id, seq, tier, _) = row
    if not (type(payload) is str and type(created_at) is str and _SQLITE_STORED_TIMESTAMP(created_at)
            and type(cost) is float and math.isfinite(cost) and type(seq) is int
            and (tier is None or type(tier) is int) and type(refused) is int and type(pii_present) is int):
        return None
    try:
        datetime.fromisoformat(created_at)  # a real date and time, or the typed select fails to read it
        written = (_SQLITE_ROW_TEMPLATE % (
            prev_hash, _escape(actor), _escape(actor_role), _escape(chain), _escape(channel), cost,
            created_at[:10], created_at[11:], "null" if classification is None else _escape(classification),
            _escape(event), "null" if model_key is None else _escape(model_key), payload,
            "true" if pii_present else "false", _escape(policy_ids), _escape(prev_hash),
            "null" if question is None else _escape(question), "true" if refused else "false",
            _escape(request_id), seq, "null" if tier is None else tier)).encode()
    except (ValueError, TypeError):  # an impossible date, a text column holding something else
        return None
    return hashlib.sha256(written).hexdigest()


def _typed_row_digest(row: Sequence) -> str | None:
    """`_row_digest` of a row the driver already returns typed (PostgreSQL), or None when it
    cannot be hashed (the caller's general path then says why)."""
    try:
        return _row_digest(row[:_HASH_AT])
    except (ValueError, TypeError, AttributeError, UnicodeError):
        return None


def _no_fast_digest(row: Sequence) -> None:
    return None


def _driver_params(compiled: SQLCompiler, params: dict) -> Sequence | dict:
    return tuple(params[name] for name in compiled.positiontup) if compiled.positional else params


class _StoredChain:
    """The chain's rows in seq order, streamed straight from the driver's cursor inside the
    connection's transaction (one read snapshot), without building SQLAlchemy rows.

    Each row is the hashed fields in HASHED_FIELDS order and then the stored hash, as the
    driver returns them. `typed(row)` is what a typed select of the columns returns: it
    applies SQLAlchemy's own result processors for the columns that have one on this
    dialect and driver (on SQLite created_at, stored as text, and the booleans, stored as
    0/1; none on PostgreSQL, whose driver returns Python types), and raises ValueError or
    TypeError for a value they cannot convert, as the typed select would. `fast_digest(row)`
    is `_row_digest(typed(row)[:-1])` for rows of the types the store writes, computed
    without converting, and None for any other row. Driver errors are raised as SQLAlchemy
    would raise them. With `after`, only the rows after that seq.
    """

    def __init__(self, conn: Connection, chain: str, after: int | None = None) -> None:
        dialect = conn.dialect
        if not conn.in_transaction():
            conn.begin()  # what executing through SQLAlchemy would do (autobegin)
        # The full walk has no bound on seq at all: a row stored with seq 0 or below is evidence too.
        compiled = (_STORED_ROWS if after is None else _STORED_ROWS_AFTER).compile(dialect=dialect)
        self._sql, self._params = compiled.string, _driver_params(compiled, {"chain": chain, "after": after})
        self._dbapi_error = dialect.loaded_dbapi.Error
        self._driver = conn.connection.driver_connection
        self._cursor = None
        self._restore_mmap_size: int | None = None
        try:
            with self._driver_errors():
                if dialect.name == "sqlite":
                    # Read the file through a memory map for this walk, not a read() call and a
                    # copy per page: ~1 us of system time a row. Only this connection, only now.
                    self._restore_mmap_size = self._driver.execute("PRAGMA mmap_size").fetchone()[0]
                    self._driver.execute(f"PRAGMA mmap_size = {_SQLITE_VERIFY_MMAP_BYTES:d}")
                if dialect.driver == "psycopg" and not self._driver.autocommit:
                    # A named (server-side) cursor fetching itersize rows a round trip, as
                    # stream_results does; it needs a transaction, so not on autocommit.
                    self._cursor = self._driver.cursor(f"policyhub_verify_{id(self):x}")
                    self._cursor.itersize = _VERIFY_BATCH
                else:
                    self._cursor = self._driver.cursor()
                self._cursor.execute(self._sql, self._params)
                description = self._cursor.description
        except BaseException:
            self.close()
            raise
        conversions = {}
        for at, (name, column) in enumerate(zip(HASHED_FIELDS, description)):
            process = _TABLE.c[name].type.dialect_impl(dialect).result_processor(dialect, column[1])
            if process is not None:
                conversions[name] = (at, process)
        self._conversions = list(conversions.values())
        self.fast_digest = _fast_digest_for(dialect.name, {name: process for name, (_, process) in conversions.items()})

    @contextmanager
    def _driver_errors(self) -> Generator[None, None, None]:
        try:
            yield
        except self._dbapi_error as exc:
            raise DBAPIError.instance(self._sql, self._params, exc, self._dbapi_error) from exc

    def __iter__(self) -> Generator[Sequence, None, None]:
        with self._driver_errors():
            yield from self._cursor

    def typed(self, row: Sequence) -> list:
        values = list(row)
        for at, convert in self._conversions:
            values[at] = convert(values[at])
        return values

    def close(self) -> None:
        with self._driver_errors():
            try:
                if self._cursor is not None:
                    self._cursor.close()
            finally:
                if self._restore_mmap_size is not None:
                    self._driver.execute(f"PRAGMA mmap_size = {self._restore_mmap_size:d}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _fast_digest_for(dialect_name: str, conversions: Mapping[str, Callable]) -> Callable[[Sequence], str | None]:
    """The fast digest for rows read with these result processors: exactly the conversions
    _sqlite_row_digest reproduces, or none at all; any other dialect or SQLAlchemy version
    reads every row typed."""
    if not conversions:
        return _typed_row_digest
    if dialect_name == "sqlite" and conversions == {"created_at": processors.str_to_datetime,
                                                    "refused": processors.int_to_boolean,
                                                    "pii_present": processors.int_to_boolean}:
        return _sqlite_row_digest
    return _no_fast_digest


def _stored_rows(conn: Connection, chain: str) -> Generator[list, None, None]:
    """The chain's rows in seq order, streamed, each what a typed select returns: the hashed
    fields in HASHED_FIELDS order and then the stored hash."""
    with _StoredChain(conn, chain) as stored:
        for row in stored:
            yield stored.typed(row)


def verify_chain(session_or_conn: Session | Connection, chain: str = MAIN_CHAIN,
                 checkpoints: Sequence[Checkpoint] = (), *, key: bytes | None = None,
                 after_last_checkpoint: bool = False) -> VerifyResult:
    """Walk the chain in seq order and report the earliest record that can no longer be trusted.

    Streams rows (one read snapshot), so memory stays flat however long the chain is.
    Checkpoints of other chains are ignored. With `key`, a checkpoint whose signature
    fails is reported and not used (a checkpoint file rewritten to match a rewritten
    chain is the attack checkpoints exist to stop); without it they are taken as given.
    `first_bad_seq` is:
      - a gap: the first missing seq;
      - a duplicate or out-of-order seq: that seq;
      - a record whose hash does not match its content: that record;
      - two records that each match their hash but whose link disagrees: the earlier
        one (the classic "edit a row and recompute its hash"; the data cannot tell that
        from a forged later record, so the reason names both);
      - a hash differing from a checkpoint: the first seq after the last checkpoint that
        still matched (everything from there may have been rewritten);
      - a checkpoint beyond the head: the first seq cut off.

    `after_last_checkpoint` walks only the records after the last trusted checkpoint, once
    the record at its seq still has the signed head hash (`records` then counts those
    records); what a periodic checkpoint needs, in time that does not grow with the chain.
    A record before it edited without recomputing the chain up to the checkpoint is left
    to the full walk. When the record at that seq differs, the whole chain is walked, so
    the result is the full walk's.
    """
    relevant, problem = _trusted_checkpoints([cp for cp in checkpoints if cp.chain == chain], key)
    relevant.sort(key=lambda cp: cp.seq)
    expected: dict[int, list[Checkpoint]] = {}
    for cp in relevant:
        expected.setdefault(cp.seq, []).append(cp)
    records, prev_seq, prev_hash, last_matching_cp = 0, 0, GENESIS_HASH, 0
    conn = _connection(session_or_conn)
    after = None
    if after_last_checkpoint and relevant and relevant[-1].seq > 0:
        anchor = relevant[-1]
        stored_hash = conn.execute(_HASH_AT_SEQ, {"chain": chain, "seq": anchor.seq}).scalar()
        if all(cp.head_hash == stored_hash for cp in expected[anchor.seq]):
            after = prev_seq = last_matching_cp = anchor.seq
            prev_hash = anchor.head_hash
    bad: tuple[int, str] | None = None
    with _StoredChain(conn, chain, after) as stored:
        fast_digest, typed = stored.fast_digest, stored.typed
        try:
            for row in stored:
                # A row on the fast path is one a typed select reads without error, and its
                # seq, prev_hash and hash read as stored; any other row is converted here,
                # which raises where the typed select would.
                digest = fast_digest(row) if bad is None else None
                values = row if digest is not None else typed(row)
                records += 1
                seq, stored_hash = values[_SEQ_AT], values[_HASH_AT]
                if bad is None:
                    if (digest is None or digest != stored_hash or seq != prev_seq + 1
                            or values[_PREV_HASH_AT] != prev_hash):
                        typed_values = values if digest is None else typed(row)
                        bad = _check_row(typed_values[:_HASH_AT], stored_hash, prev_seq, prev_hash)
                    if bad is None and seq in expected:
                        for cp in expected[seq]:
                            if cp.head_hash != stored_hash:
                                bad = (last_matching_cp + 1,
                                       f"hash at seq {seq} differs from the signed checkpoint of {cp.time}: records "
                                       f"{last_matching_cp + 1}..{seq} were rewritten and the chain recomputed")
                                break
                        else:
                            last_matching_cp = seq
                prev_seq, prev_hash = seq, stored_hash
        except (ValueError, TypeError) as exc:
            # A value the driver cannot even decode (say, a timestamp typed in by hand). Database
            # errors (a lost connection) are not evidence of anything and propagate.
            if bad is None:
                bad = (prev_seq + 1, f"record after seq {prev_seq} cannot be read: {type(exc).__name__}: {exc}")
    if bad is None and relevant and relevant[-1].seq > prev_seq:
        cp = relevant[-1]
        bad = (prev_seq + 1, f"chain ends at seq {prev_seq} but the signed checkpoint of {cp.time} covers seq "
                             f"{cp.seq}: records {prev_seq + 1}..{cp.seq} were deleted")
    if bad is not None:
        return VerifyResult(False, records, bad[0], bad[1], prev_seq, prev_hash)
    if problem is not None:
        return VerifyResult(False, records, None, problem, prev_seq, prev_hash)
    return VerifyResult(True, records, None, None, prev_seq, prev_hash)


def _check_row(values: list, stored_hash: str, prev_seq: int, prev_hash: str) -> tuple[int, str] | None:
    """(first bad seq, reason) for one row given the row before it, or None when it holds."""
    seq = values[_SEQ_AT]
    if seq != prev_seq + 1:
        if seq <= prev_seq:
            return seq, f"seq {seq} follows seq {prev_seq}: a duplicated or reordered record"
        missing = f"seq {prev_seq + 1}" if seq == prev_seq + 2 else f"seqs {prev_seq + 1}..{seq - 1}"
        return prev_seq + 1, f"{missing} missing: deleted from the chain"
    try:
        consistent = _row_digest(values) == stored_hash
    except (ValueError, TypeError, AttributeError, UnicodeError) as exc:
        return seq, f"seq {seq} cannot be hashed ({type(exc).__name__}: {exc}): the record was altered"
    if values[_PREV_HASH_AT] != prev_hash:
        if consistent and prev_seq > 0:
            # Both records hash correctly, so either one may be the forgery; name the earlier.
            return prev_seq, (f"seq {seq} is chained to another hash of seq {prev_seq} than the one stored: "
                              f"seq {prev_seq} was altered and its hash recomputed, or seq {seq} was forged")
        return seq, f"seq {seq} does not chain to seq {prev_seq}: its prev_hash was altered"
    if not consistent:
        return seq, f"seq {seq} does not match its hash: the record was altered"
    return None


def audited_chains(session_or_conn: Session | Connection, checkpoints: Sequence[Checkpoint] = ()) -> list[str]:
    """The chains a full verify walks: main, every chain with records and every chain a checkpoint
    names, main first. A chain whose rows were all deleted after it was checkpointed is still
    named, so its loss is reported instead of going unseen."""
    others = (set(chain_names(session_or_conn)) | {cp.chain for cp in checkpoints}) - {MAIN_CHAIN}
    return [MAIN_CHAIN, *sorted(others)]


@dataclass
class ChainsVerifyResult:
    """`verify_chain` of every audited chain, main first."""

    chains: dict[str, VerifyResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.chains.values())

    @property
    def broken(self) -> list[str]:
        return [chain for chain, result in self.chains.items() if not result.ok]

    @property
    def main(self) -> VerifyResult:
        return self.chains[MAIN_CHAIN]

    @property
    def records(self) -> int:
        return sum(result.records for result in self.chains.values())


def verify_all_chains(session_or_conn: Session | Connection, checkpoints: Sequence[Checkpoint] = (), *,
                      key: bytes | None = None) -> ChainsVerifyResult:
    """The full walk of every audited chain (see audited_chains and verify_chain): what
    "verify the audit trail" means, so one broken chain fails it whichever chain it is."""
    return ChainsVerifyResult({chain: verify_chain(session_or_conn, chain, checkpoints, key=key)
                               for chain in audited_chains(session_or_conn, checkpoints)})


# -- checkpoints --------------------------------------------------------------------


def _signature(message: str, key: bytes) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def make_checkpoint(session: Session, key: bytes, chain: str = MAIN_CHAIN,
                    checkpoints: Sequence[Checkpoint] = (), verify: bool = True,
                    incremental: bool = False) -> Checkpoint:
    """Sign the chain's current head. By default the chain (against the earlier
    checkpoints) is verified first, so a checkpoint never blesses a tampered chain;
    `incremental` verifies only the records after the last checkpoint (see verify_chain)."""
    if verify:
        result = verify_chain(session, chain, checkpoints, key=key, after_last_checkpoint=incremental)
        if not result.ok:
            raise AuditChainBroken(f"refusing to checkpoint a broken chain: {result.reason}")
        seq, head = result.head_seq, result.head_hash
    else:
        seq, head = chain_head(session, chain)
    unsigned = Checkpoint(seq=seq, head_hash=head, time=iso_utc(datetime.now(UTC)), chain=chain, signature="")
    return replace(unsigned, signature=_signature(unsigned.signed_content(), key))


def verify_checkpoint_signature(cp: Checkpoint, key: bytes) -> bool:
    return hmac.compare_digest(cp.signature, _signature(cp.signed_content(), key))


def save_checkpoint(path: str | os.PathLike, cp: Checkpoint) -> None:
    """Append one checkpoint as a JSON line, synced to disk: it is evidence."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(canonical_json(asdict(cp)) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@contextmanager
def checkpoint_file_lock(path: str | os.PathLike) -> Generator[None, None, None]:
    """An exclusive lock (flock on `<file>.lock` beside it) for reading a checkpoint file,
    deciding and appending as one step, across threads and processes sharing the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@dataclass
class CheckpointRound:
    written: list[Checkpoint]
    refused: dict[str, str]  # chain -> why its head was not signed


def checkpoint_moved_chains(session_factory: sessionmaker[Session], key: bytes,
                            path: str | os.PathLike) -> CheckpointRound:
    """Sign and append a checkpoint for every chain whose head moved since its last one in the file.

    The chains are those verify_all_chains walks (a chain deleted whole is refused, not
    forgotten). Each is verified from its last checkpoint on first, and a
    broken one is refused and left for the full `verify_chain` to locate. Under the file's
    lock, so processes sharing the file never sign the same (chain, seq) twice.
    """
    written, refused = [], {}
    with checkpoint_file_lock(path):
        checkpoints = load_checkpoints(path)
        with session_factory() as session:
            chains = sorted(audited_chains(session, checkpoints))  # rounds append in chain-name order
        for chain in chains:
            signed = {cp.seq: cp.head_hash for cp in checkpoints if cp.chain == chain}
            last_seq = max(signed, default=0)
            with session_factory() as session:  # one short read transaction per chain
                if chain_head(session, chain) == (last_seq, signed.get(last_seq, GENESIS_HASH)):
                    continue
                try:
                    cp = make_checkpoint(session, key, chain, checkpoints, incremental=True)
                except AuditChainBroken as exc:
                    refused[chain] = exc.detail
                    continue
            if cp.seq not in signed:
                save_checkpoint(path, cp)
                checkpoints.append(cp)
                written.append(cp)
    return CheckpointRound(written, refused)


def load_checkpoints(path: str | os.PathLike) -> list[Checkpoint]:
    """Checkpoints from a JSON lines file; none yet when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    checkpoints = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            checkpoints.append(Checkpoint(seq=int(data["seq"]), head_hash=str(data["head_hash"]),
                                          time=str(data["time"]), chain=str(data["chain"]),
                                          signature=str(data["signature"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a checkpoint ({exc})") from exc
    return checkpoints


# -- benchmark ----------------------------------------------------------------------


def _bench_payload(i: int) -> dict:
    """About the size and shape of an ask trace (~1.5 KB)."""
    return {
        "trace": {
            "request_id": f"bench-{i:08d}", "channel": "api",
            "question": "What is the maximum loan-to-value ratio for a first home loan above INR 75 lakh?",
            "pii_types": [], "risk": "low", "threshold": 0.42, "best_score": 0.6812,
            "retrieved": [{"policy_id": f"CR-HL-{k}", "clause": f"4.{k}", "version": "2.0", "score": 0.61 - k / 100,
                           "effective_date": "2025-04-01"} for k in range(5)],
            "route": {"tier": 1, "model": "smollm2@0.1.2", "reason": "classification internal, tier 1 allowed"},
            "attempts": [{"model": "smollm2@0.1.2", "ok": True, "latency_ms": 812.5}],
        },
        "response": {
            "answer": "For loans above INR 75 lakh the LTV must not exceed 75% [CR-HL-LTV 4.2, v2.0, 2025-04-01].",
            "citations": [{"policy_id": "CR-HL-LTV", "clause": "4.2", "version": "2.0",
                           "excerpt": "Loans above INR 75 lakh: the LTV ratio shall not exceed 75 per cent."}],
        },
        "embedding_model": "all-MiniLM-L6-v2@1", "embedding_fingerprint": "f" * 64,
    }


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def bench_audit(session_factory: sessionmaker[Session], n: int = 100_000, chain: str = MAIN_CHAIN) -> dict:
    """Append n records (each its own committed transaction), then verify and export them.

    Run against an empty chain: the verify and export figures cover the whole chain.
    """
    from governance.audit_query import AuditFilter, export_jsonl, iter_records

    latencies: list[float] = []
    for i in range(n):
        entry = AuditEntry(request_id=f"bench-{i:08d}", event="ask", actor=f"user{i % 50}", actor_role="staff",
                           channel="api", payload=_bench_payload(i), question="What is the maximum LTV?",
                           effective_classification="internal", tier=1, model_key="smollm2@0.1.2",
                           policy_ids=("CR-HL-LTV",), cost=0.00012)
        started = time.perf_counter()
        with session_factory.begin() as session:
            append(session, entry, chain)
        latencies.append(time.perf_counter() - started)
    latencies.sort()

    with session_factory() as session:
        started = time.perf_counter()
        verified = verify_chain(session, chain)
        verify_seconds = time.perf_counter() - started
    if not verified.ok:
        raise AuditChainBroken(f"benchmark chain does not verify: {verified.reason}")

    with session_factory() as session:
        started = time.perf_counter()
        exported_bytes, exported = 0, 0
        for chunk in export_jsonl(iter_records(session, AuditFilter())):
            exported_bytes += len(chunk.encode())
            exported += chunk.count("\n")
        export_seconds = time.perf_counter() - started

    return {
        "appends": n,
        "append_ms_p50": round(_percentile(latencies, 0.50) * 1000, 3),
        "append_ms_p95": round(_percentile(latencies, 0.95) * 1000, 3),
        "append_ms_p99": round(_percentile(latencies, 0.99) * 1000, 3),
        "append_ms_max": round(latencies[-1] * 1000, 3),
        "append_ms_mean": round(statistics.fmean(latencies) * 1000, 3),
        "verify_records": verified.records,
        "verify_seconds": round(verify_seconds, 3),
        "verify_records_per_s": round(verified.records / verify_seconds),
        "export_jsonl_records": exported,
        "export_jsonl_mb": round(exported_bytes / 1e6, 2),
        "export_jsonl_records_per_s": round(exported / export_seconds),
    }
