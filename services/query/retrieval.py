"""Hybrid retrieval ranked by clause.

Chunks (500-800 tokens) are what the index stores; clauses are what staff cite. So
the candidates are the clauses of the chunks that dense max-sim search and BM25
sparse search return, plus the best clauses of a clause-level BM25 over the whole
visible corpus (services.query.lexicon). Every candidate clause is then scored on
its own (dense: its own vectors from the chunk's multivector; lexical: its
clause-level BM25) and the two clause rankings plus the chunk-level ranks are fused
with RRF.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from governance.policy import GovernancePolicy, RetrievalRules
from governance.residency import visible_classifications
from services.db.models import DocumentVersion
from services.query.lexicon import ClauseLexicon
from services.vectors.base import VectorIndex
from services.vectors.sparse import encode_query, tokenize


@dataclass(frozen=True)
class VersionInfo:
    version_id: int
    policy_id: str
    version: str
    title: str
    classification: str
    effective_date: date


@dataclass(frozen=True)
class ClauseHit:
    policy_id: str
    policy_title: str
    version: str
    version_id: int
    effective_date: str
    classification: str
    clause: str
    heading_path: tuple[str, ...]
    text: str
    chunk_id: str
    dense_score: float  # cosine similarity of the best window of this clause
    lexical_score: float
    score: float  # fused (RRF) score used for ranking


@dataclass(frozen=True)
class RetrievalResult:
    clauses: list[ClauseHit]
    best_dense: float
    candidates: int
    latency_ms: float


# Questions about how a policy changed need the superseded versions beside the active ones.
_HISTORY = re.compile(
    r"\b(what (?:has |have )?changed|how (?:has|have|did) .{1,80}\bchange|chang(?:e|es|ed) (?:in|to|between|from|since)"
    r"|old and new|old vs\.? new|between versions?|previous (?:version|policy|rule|limit)|earlier version"
    r"|prior version|used to be|before (?:the|it was) (?:revised|revision|updated?|amended|change))\b",
    re.IGNORECASE)


def asks_about_history(question: str) -> bool:
    """Whether a question asks how a policy changed across versions (then superseded versions are searched too)."""
    return bool(_HISTORY.search(question))


def version_scope(question: str, as_of: date | None) -> tuple[date | None, bool]:
    """The (as_of, history) arguments of visible_versions for one question."""
    return as_of, as_of is None and asks_about_history(question)


def visible_versions(session: Session, clearance: str, policy: GovernancePolicy,
                     as_of: date | None = None, history: bool = False) -> dict[int, VersionInfo]:
    """Versions this caller may retrieve, within clearance: the active ones; those in effect on `as_of`;
    or, for a question about changes (`history`, without `as_of`), every published version."""
    allowed = visible_classifications(clearance, policy)
    statuses = ("active",) if as_of is None and not history else ("active", "superseded")
    rows = session.scalars(select(DocumentVersion).where(
        DocumentVersion.status.in_(statuses), DocumentVersion.classification.in_(allowed))).all()
    if as_of is not None:
        by_policy: dict[str, DocumentVersion] = {}
        for row in rows:
            if row.effective_date <= as_of:
                best = by_policy.get(row.policy_id)
                if best is None or (row.effective_date, row.id) > (best.effective_date, best.id):
                    by_policy[row.policy_id] = row
        rows = list(by_policy.values())
    return {r.id: VersionInfo(r.id, r.policy_id, r.version, r.title, r.classification, r.effective_date)
            for r in rows}


def rrf(rank: int, k: int) -> float:
    return 1.0 / (k + rank)


# Chunks whose payload and vectors are kept (a gold-size corpus is ~50; ~10 KB to ~1 MB each).
CHUNK_CACHE_SIZE = 5_000


def heading_only_flags(clauses: Sequence[dict]) -> list[bool]:
    """Which clauses of a chunk are bare headings: one short line that heads other clauses."""
    heads = {h.strip() for c in clauses for h in c.get("heading_path", ())}
    flags = []
    for clause in clauses:
        text = clause["text"].strip()
        one_line = "\n" not in text and len(text.split()) <= 15
        flags.append(one_line and (text in heads or (clause["number"] == "preamble" and not clause.get("heading_path"))))
    return flags


class CachedChunk(NamedTuple):
    payload: dict
    rows: np.ndarray  # one dense row per clause window
    headings: list[bool]  # per clause: a bare heading


class Retriever:
    def __init__(self, index: VectorIndex, policy: GovernancePolicy, index_name: str,
                 session_factory: sessionmaker[Session] | None = None, lexicon: ClauseLexicon | None = None,
                 embed: Callable[[list[str]], np.ndarray] | None = None) -> None:
        if lexicon is None:
            if session_factory is None:
                raise ValueError("a Retriever needs the database (session_factory) or a ClauseLexicon")
            lexicon = ClauseLexicon.from_database(session_factory)
        self.index = index
        self.policy = policy
        self.index_name = index_name
        self.lexicon = lexicon
        self.embed = embed  # to embed a question again with its acronyms spelled out; None: never
        # Chunk id -> what retrieval needs of it. Chunks are immutable (ids are derived from an
        # immutable version), so nothing kept here can go stale; it is fetched and derived once.
        self._chunks: dict[str, CachedChunk] = {}

    def _chunk_data(self, chunk_ids: list[str]) -> dict[str, CachedChunk]:
        """Each chunk's payload, clause-vector rows and heading flags, in the order given
        (ids missing from the index left out)."""
        missing = [i for i in chunk_ids if i not in self._chunks]
        if missing:
            if len(self._chunks) + len(missing) > CHUNK_CACHE_SIZE:
                self._chunks.clear()
            for hit in self.index.retrieve(self.index_name, missing, with_vectors=True):
                clauses = hit.payload["clauses"]
                self._chunks[hit.id] = CachedChunk(
                    hit.payload, np.asarray(hit.dense or [], dtype=np.float32), heading_only_flags(clauses))
        return {i: self._chunks[i] for i in chunk_ids if i in self._chunks}

    def retrieve(self, question: str, question_vector: np.ndarray, versions: dict[int, VersionInfo],
                 top_k: int | None = None) -> RetrievalResult:
        started = time.perf_counter()
        rules = self.policy.retrieval
        top_k = top_k or rules.top_clauses
        candidates = self.candidates(question, question_vector, versions) if versions else None
        if candidates is None:
            return RetrievalResult([], 0.0, 0, (time.perf_counter() - started) * 1000)
        fused = fuse(candidates, rules)
        # A bare heading ("3. Eligibility") or a title-only preamble says nothing a citation
        # could rest on: it ranks after every clause with content.
        order = sorted(range(len(fused)), key=lambda i: (candidates.heading[i], -fused[i]))
        hits: list[ClauseHit] = []
        seen: set[tuple[int, str]] = set()
        for i in order:
            chunk_id, payload, clause, dense_score = candidates.entries[i]
            key = (payload["version_id"], clause["number"])
            if key in seen:
                continue  # a clause split across windows or chunks is ranked once
            seen.add(key)
            info = versions[payload["version_id"]]
            hits.append(ClauseHit(
                policy_id=info.policy_id, policy_title=info.title, version=info.version,
                version_id=info.version_id, effective_date=info.effective_date.isoformat(),
                classification=info.classification, clause=clause["number"],
                heading_path=tuple(clause.get("heading_path", ())), text=clause["text"], chunk_id=chunk_id,
                dense_score=dense_score, lexical_score=candidates.lexical[i], score=fused[i]))
            if len(hits) >= top_k:
                break
        best_dense = max(e[3] for e in candidates.entries)
        return RetrievalResult(hits, best_dense, candidates.chunks, (time.perf_counter() - started) * 1000)

    def candidates(self, question: str, question_vector: np.ndarray,
                   versions: dict[int, VersionInfo]) -> Candidates | None:
        """Every clause of the candidate chunks with its dense and lexical evidence; None if there is none."""
        rules = self.policy.retrieval
        ids = sorted(versions)
        qv = np.asarray(question_vector, dtype=np.float32)
        expansions = self.lexicon.expansions(tokenize(question)) if self.embed is not None else []
        if expansions:
            # "PEP" and "politically exposed person" are one thing to BM25 (the lexicon expands
            # both ways) but not to a small embedding model: search with the question that says both.
            qv = np.asarray(self.embed([f"{question} ({'; '.join(expansions)})"])[0], dtype=np.float32)
        # Ids and scores only: a chunk's payload and clause vectors never change, so they are
        # fetched once per chunk and kept (converting them is most of a search's cost).
        dense_hits = self.index.search_dense(self.index_name, qv.tolist(), rules.candidate_chunks, ids,
                                             with_payload=False)
        sparse_hits = self.index.search_sparse(self.index_name, encode_query(question), rules.candidate_chunks, ids,
                                               with_payload=False)
        lexical = self.lexicon.search(tokenize(question), ids, rules.candidate_clauses)
        candidate_ids = [h.id for h in dense_hits] + [h.id for h in sparse_hits] + [c for c, _ in lexical.top]
        chunks = self._chunk_data(list(dict.fromkeys(candidate_ids)))
        found = Candidates(dense_rank={h.id: r for r, h in enumerate(dense_hits, start=1)},
                           sparse_rank={h.id: r for r, h in enumerate(sparse_hits, start=1)}, chunks=len(chunks))
        for chunk_id, (payload, rows, headings) in chunks.items():
            if payload.get("version_id") not in versions:
                continue  # defence in depth: never trust the index filter alone
            sims = rows @ qv if rows.size else np.zeros(0)
            best = {}
            for row, clause_idx in enumerate(payload.get("row_clause", [])):
                if row < len(sims):
                    best[clause_idx] = max(best.get(clause_idx, -1.0), float(sims[row]))
            found.heading += headings
            for idx, clause in enumerate(payload["clauses"]):
                found.entries.append((chunk_id, payload, clause, best.get(idx, -1.0)))
                found.lexical.append(lexical.scores.get((chunk_id, clause["number"]), 0.0))
        return found if found.entries else None


@dataclass
class Candidates:
    """The clauses one question is ranked over, and the evidence for each."""

    dense_rank: dict[str, int]  # chunk id -> rank in the dense chunk search
    sparse_rank: dict[str, int]  # chunk id -> rank in the sparse chunk search
    chunks: int
    entries: list[tuple[str, dict, dict, float]] = field(default_factory=list)  # chunk id, payload, clause, cosine
    lexical: list[float] = field(default_factory=list)  # clause-level BM25 over the visible corpus
    heading: list[bool] = field(default_factory=list)  # a bare heading


def fuse(candidates: Candidates, rules: RetrievalRules) -> list[float]:
    """Reciprocal-rank fusion of each clause's dense rank, lexical rank and its chunk's ranks."""
    entries, lexical = candidates.entries, candidates.lexical
    d_rank = _ranks([e[3] for e in entries])
    l_rank = _ranks(lexical)
    k = rules.rrf_k
    fused = []
    for i, (chunk_id, _payload, _clause, _dense) in enumerate(entries):
        score = rules.dense_weight * rrf(d_rank[i], k)
        if lexical[i] > 0:
            score += rules.lexical_weight * rrf(l_rank[i], k)
        # the chunk's own standing in both searches breaks ties between its clauses and others
        score += rules.chunk_weight * (rrf(candidates.dense_rank.get(chunk_id, 10_000), k)
                                       + rrf(candidates.sparse_rank.get(chunk_id, 10_000), k))
        fused.append(score)
    return fused


def _ranks(scores: Sequence[float]) -> list[int]:
    """1-based rank of each score, best first (ties keep their order)."""
    ranks = [0] * len(scores)
    for rank, i in enumerate(sorted(range(len(scores)), key=lambda i: -scores[i]), start=1):
        ranks[i] = rank
    return ranks
