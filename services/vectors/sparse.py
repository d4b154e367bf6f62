"""BM25 sparse encoding of chunk text and queries (pure functions, no downloads).

Split of the BM25 formula between client and index:

* documents carry the saturated term frequency
  ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))``;
* queries carry weight 1 per unique term;
* IDF is applied by the index at query time (Qdrant sparse ``Modifier.IDF``, which
  both Qdrant Edge 0.9.0 and the server support), so it tracks the live
  collection instead of being frozen into each document at ingest.

Why our own tokenizer rather than Qdrant Edge's ``Bm25`` embedder: Edge's word
tokenizer splits ``4.1.2`` into ``4``, ``1``, ``2`` and ``80%`` into ``80``, so a
question naming a clause number would match every clause containing a ``1``.
Policy questions cite clause numbers, percentages and amounts, so those stay
whole here.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter

from services.vectors.base import SparseVector

K1 = 1.2
B = 0.75
# Expected chunk length in tokens after stopword removal. Chunks are clause-sized
# (a clause or a short run of clauses), shorter than Qdrant's web-page default of 256.
DEFAULT_AVGDL = 120.0

# Order matters: the more specific shapes are tried first at each position.
_TOKEN = re.compile(
    r"\d{1,3}(?:,\d{3})+(?:\.\d+)?%?"  # 10,000 / 1,250.50 / 1,000%  (thousands separators)
    r"|\d+(?:\.\d+)*%"  # 80% / 2.5%
    r"|\d+(?:\.\d+)+"  # clause numbers 4.1.2, decimals 2.5
    r"|[^\W_]+",  # words and plain numbers, any script
)

STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your
    yours yourself yourselves
    """.split()
)


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens, stopwords dropped, lightly stemmed; numbers like 4.1.2 / 80% / 10,000 kept whole."""
    terms = (_term(token) for token in _TOKEN.findall(text.casefold()))
    return [t for t in terms if t is not None]


@functools.lru_cache(maxsize=200_000)
def _term(token: str) -> str | None:
    # Cached: retrieval re-tokenises hundreds of candidate clauses per query, and
    # the vocabulary of a policy corpus is small.
    if token[0].isdigit():
        return token.replace(",", "")  # "10,000" and "10000" are the same amount
    if token in STOPWORDS or len(token) == 1:
        return None
    return light_stem(token)


def light_stem(word: str) -> str:
    """A deliberately small suffix stripper: plurals, -ing, -ed, trailing -e.

    It only has to map a word's common inflections to one key consistently for
    documents and queries ("policies"/"policy", "approved"/"approve"/"approving");
    the keys need not be real words. Words with digits are left alone.
    """
    if len(word) <= 3 or any(ch.isdigit() for ch in word):
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    elif word.endswith("ing") and len(word) > 5:
        word = _undouble(word[:-3])
    elif word.endswith("ed") and len(word) > 4:
        word = _undouble(word[:-2])
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


def _undouble(stem: str) -> str:
    # "transferring" -> "transferr" -> "transfer"; keep ll/ss/zz ("billing" -> "bill")
    if len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "lsz" and stem[-1].isalpha():
        return stem[:-1]
    return stem


def term_id(token: str) -> int:
    """Stable 31-bit id of a token (blake2b), the same in every process and on every machine.

    Python's hash() is salted per process, so it cannot key vectors stored on disk.
    """
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def encode_document(text: str, avgdl: float = DEFAULT_AVGDL, k1: float = K1, b: float = B) -> SparseVector:
    """BM25 term-frequency weights of a chunk; IDF is left to the index."""
    if avgdl <= 0:
        raise ValueError("avgdl must be positive")
    tokens = tokenize(text)
    if not tokens:
        return SparseVector(indices=[], values=[])
    length_norm = k1 * (1 - b + b * len(tokens) / avgdl)
    # Counting by id rather than token folds the (rare) hash collisions into one
    # term, as the index would see them anyway.
    frequencies = Counter(term_id(token) for token in tokens)
    indices = sorted(frequencies)
    values = [frequencies[i] * (k1 + 1) / (frequencies[i] + length_norm) for i in indices]
    return SparseVector(indices=indices, values=values)


def encode_query(text: str) -> SparseVector:
    """Weight 1 per unique query term, so a document's score is the sum of IDF x its BM25 tf weight."""
    indices = sorted({term_id(token) for token in tokenize(text)})
    return SparseVector(indices=indices, values=[1.0] * len(indices))
