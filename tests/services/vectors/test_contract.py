"""One contract, every VectorIndex backend: real Qdrant Edge shards and qdrant-client local mode.

qdrant-client's local mode (QdrantClient(path=...)) runs the same client calls
the server backend makes against a real server, so it stands in for one here.
"""

from __future__ import annotations

import math
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from structlog.testing import capture_logs

from services.errors import IndexUnavailable, InvalidRequest, NotFound, ReembeddingRequired
from services.vectors import IndexPoint, SparseVector, VectorIndex, open_vector_index
from services.vectors.edge import EdgeVectorIndex
from services.vectors.server import ServerVectorIndex
from services.vectors.sparse import encode_document, encode_query

pytestmark = [
    pytest.mark.integration,
    # Local mode warns that payload indexes are a no-op there; on a server they are not.
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect"),
]

DIM = 8
COLLECTION = "chunks_test"
Versions = dict[int, list[IndexPoint]]


def unit(i: int) -> list[float]:
    return [1.0 if j == i else 0.0 for j in range(DIM)]


def mix(weights: dict[int, float]) -> list[float]:
    return [weights.get(j, 0.0) for j in range(DIM)]


def normalised(row: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in row))
    return [x / norm for x in row]


def point(
    dense: list[list[float]],
    version_id: int = 1,
    text: str = "",
    point_id: str | None = None,
    **payload: object,
) -> IndexPoint:
    return IndexPoint(
        id=point_id or str(uuid.uuid4()),
        dense=dense,
        sparse=encode_document(text),
        payload={"version_id": version_id, "classification": "internal", **payload},
    )


# -- backends --------------------------------------------------------------


def _edge_factory(tmp_path: Path) -> Callable[[], VectorIndex]:
    return lambda: EdgeVectorIndex(tmp_path / "shards")


def _server_local_factory(tmp_path: Path) -> Callable[[], VectorIndex]:
    return lambda: ServerVectorIndex(QdrantClient(path=str(tmp_path / "qdrant-local")))


@pytest.fixture(params=[_edge_factory, _server_local_factory], ids=["edge", "server-local"])
def open_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], VectorIndex]]:
    """Opens the backend over one storage location; every handle opened is closed at teardown."""
    factory = request.param(tmp_path)
    opened: list[VectorIndex] = []

    def open_() -> VectorIndex:
        index = factory()
        opened.append(index)
        return index

    yield open_
    for index in opened:
        index.close()


@pytest.fixture
def index(open_index: Callable[[], VectorIndex]) -> VectorIndex:
    idx = open_index()
    idx.ensure_collection(COLLECTION, DIM)
    return idx


# -- collections -----------------------------------------------------------


def test_ensure_collection_is_idempotent_and_keeps_data(index: VectorIndex) -> None:
    index.upsert(COLLECTION, [point([unit(0)])])
    index.ensure_collection(COLLECTION, DIM)
    index.ensure_collection(COLLECTION, DIM)
    assert index.collection_exists(COLLECTION)
    assert index.list_collections() == [COLLECTION]
    assert index.count(COLLECTION) == 1


def test_ensure_collection_with_another_dim_requires_reembedding(index: VectorIndex) -> None:
    with pytest.raises(ReembeddingRequired):
        index.ensure_collection(COLLECTION, DIM * 2)


def test_drop_collection_removes_it_and_is_idempotent(index: VectorIndex) -> None:
    index.ensure_collection("other", DIM)
    index.upsert(COLLECTION, [point([unit(0)])])
    index.drop_collection(COLLECTION)
    index.drop_collection(COLLECTION)
    assert not index.collection_exists(COLLECTION)
    assert index.list_collections() == ["other"]
    with pytest.raises(NotFound):
        index.search_dense(COLLECTION, unit(0), limit=3)


def test_unknown_collection_is_not_found(index: VectorIndex) -> None:
    assert not index.collection_exists("missing")
    with pytest.raises(NotFound):
        index.search_dense("missing", unit(0), limit=3)
    with pytest.raises(NotFound):
        index.search_sparse("missing", encode_query("loan"), limit=3)
    with pytest.raises(NotFound):
        index.count("missing")
    with pytest.raises(NotFound):
        index.upsert("missing", [point([unit(0)])])


def test_collection_names_cannot_escape_the_shard_directory(index: VectorIndex) -> None:
    with pytest.raises(InvalidRequest):
        index.ensure_collection("../outside", DIM)
    with pytest.raises(InvalidRequest):
        index.collection_exists("a/b")


def test_points_without_version_are_rejected(index: VectorIndex) -> None:
    bad = IndexPoint(
        id=str(uuid.uuid4()), dense=[unit(0)], sparse=SparseVector([], []), payload={"classification": "x"}
    )
    with pytest.raises(InvalidRequest, match="version_id"):
        index.upsert(COLLECTION, [bad])
    assert index.count(COLLECTION) == 0


# -- dense -----------------------------------------------------------------


def test_dense_search_scores_a_point_by_its_best_row(index: VectorIndex) -> None:
    # Only the SECOND row of `two_rows` matches the query. Scoring by the first
    # row alone (or by the mean of rows) would rank `one_close_row` first.
    two_rows = point([unit(0), unit(1)])
    one_close_row = point([mix({1: 0.8, 2: 0.6})])
    unrelated = point([unit(3), unit(4)])
    index.upsert(COLLECTION, [unrelated, one_close_row, two_rows])

    hits = index.search_dense(COLLECTION, unit(1), limit=3)

    assert [h.id for h in hits] == [two_rows.id, one_close_row.id, unrelated.id]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].score == pytest.approx(0.8, abs=1e-5)
    assert hits[0].payload == {"version_id": 1, "classification": "internal"}
    assert hits[0].dense is None


def test_dense_search_can_return_the_multivector(index: VectorIndex) -> None:
    p = point([mix({0: 3.0, 1: 4.0}), unit(5)])
    index.upsert(COLLECTION, [p])
    (hit,) = index.search_dense(COLLECTION, unit(5), limit=1, with_vectors=True)
    assert hit.dense is not None
    assert hit.dense == [pytest.approx(normalised(mix({0: 3.0, 1: 4.0}))), pytest.approx(unit(5))]


# -- sparse ----------------------------------------------------------------


def test_sparse_search_ranks_the_document_with_the_query_terms_first(index: VectorIndex) -> None:
    texts = {
        "kyc": "Customer due diligence must be completed before an account is opened.",
        "ltv": "Mortgage loans above 80% loan-to-value require approval under clause 4.1.2.",
        "travel": "Staff travel expenses are reimbursed within 30 days of submission.",
    }
    points = {key: point([unit(i)], text=text) for i, (key, text) in enumerate(texts.items())}
    index.upsert(COLLECTION, list(points.values()))

    hits = index.search_sparse(COLLECTION, encode_query("Which loans need approval above 80% LTV?"), limit=3)

    assert hits[0].id == points["ltv"].id
    # documents sharing no term with the query are not hits at all
    assert {h.id for h in hits} == {points["ltv"].id}
    assert index.search_sparse(COLLECTION, encode_query("clause 4.1.2"), limit=3)[0].id == points["ltv"].id


def test_idf_lets_a_rare_term_outrank_a_frequent_one(index: VectorIndex) -> None:
    # "loan" is in every document; "collateral" in one. Without IDF the
    # repeated "loan" document has the larger raw dot product with the query
    # (asserted below); with IDF the rare term must win.
    filler = [point([unit(2)], text=f"loan terms schedule {i}") for i in range(6)]
    many_loans = point([unit(0)], text="loan loan loan repayment loan")
    rare_term = point([unit(1)], text="collateral valuation report")
    index.upsert(COLLECTION, [*filler, many_loans, rare_term])
    query = encode_query("loan collateral")

    def raw_dot(doc: IndexPoint) -> float:
        weights = dict(zip(doc.sparse.indices, doc.sparse.values, strict=True))
        return sum(weights.get(i, 0.0) * v for i, v in zip(query.indices, query.values, strict=True))

    assert raw_dot(many_loans) > raw_dot(rare_term)

    hits = index.search_sparse(COLLECTION, query, limit=3)
    assert hits[0].id == rare_term.id
    assert hits[0].score > hits[1].score


def test_empty_sparse_query_finds_nothing(index: VectorIndex) -> None:
    index.upsert(COLLECTION, [point([unit(0)], text="loan approval")])
    assert index.search_sparse(COLLECTION, encode_query("the and of"), limit=3) == []


# -- versions --------------------------------------------------------------


@pytest.fixture
def three_versions(index: VectorIndex) -> Versions:
    by_version = {
        v: [point([unit(v), unit(7)], version_id=v, text=f"loan policy v{v}") for _ in range(v)] for v in (1, 2, 3)
    }
    index.upsert(COLLECTION, [p for points in by_version.values() for p in points])
    return by_version


def test_version_filter_excludes_other_versions(index: VectorIndex, three_versions: Versions) -> None:
    dense = index.search_dense(COLLECTION, unit(7), limit=10, version_ids=[2])
    assert {h.id for h in dense} == {p.id for p in three_versions[2]}
    sparse = index.search_sparse(COLLECTION, encode_query("loan policy"), limit=10, version_ids=[1, 3])
    assert {h.id for h in sparse} == {p.id for p in three_versions[1] + three_versions[3]}
    assert {h.payload["version_id"] for h in sparse} == {1, 3}
    # unfiltered sees all six
    assert len(index.search_dense(COLLECTION, unit(7), limit=10)) == 6


def test_empty_version_list_matches_nothing(index: VectorIndex, three_versions: Versions) -> None:
    assert index.search_dense(COLLECTION, unit(7), limit=10, version_ids=[]) == []
    assert index.search_sparse(COLLECTION, encode_query("loan"), limit=10, version_ids=[]) == []
    assert index.count(COLLECTION, version_ids=[]) == 0
    index.delete_versions(COLLECTION, [])
    assert index.count(COLLECTION) == 6


def test_count_by_version(index: VectorIndex, three_versions: Versions) -> None:
    assert index.count(COLLECTION) == 6
    assert index.count(COLLECTION, version_ids=[3]) == 3
    assert index.count(COLLECTION, version_ids=[1, 2]) == 3
    assert index.count(COLLECTION, version_ids=[99]) == 0


def test_delete_versions_removes_exactly_those(index: VectorIndex, three_versions: Versions) -> None:
    index.delete_versions(COLLECTION, [1, 3])
    assert index.count(COLLECTION) == 2
    assert index.count(COLLECTION, version_ids=[1, 3]) == 0
    kept = index.retrieve(COLLECTION, [p.id for p in three_versions[2]])
    assert [h.id for h in kept] == [p.id for p in three_versions[2]]
    assert index.retrieve(COLLECTION, [three_versions[1][0].id]) == []
    assert {h.payload["version_id"] for h in index.search_dense(COLLECTION, unit(7), limit=10)} == {2}


def test_optimize_keeps_every_point_searchable(index: VectorIndex) -> None:
    points = [point([unit(i % DIM), unit((i + 1) % DIM)], version_id=i % 3, text=f"loan {i}") for i in range(90)]
    index.upsert(COLLECTION, points)
    index.delete_versions(COLLECTION, [0])
    index.optimize(COLLECTION)
    assert index.count(COLLECTION) == 60
    assert index.count(COLLECTION, version_ids=[0]) == 0
    assert index.search_dense(COLLECTION, unit(1), limit=1)[0].score == pytest.approx(1.0, abs=1e-3)
    assert len(index.search_sparse(COLLECTION, encode_query("loan"), limit=100)) == 60


# -- retrieve / replace ----------------------------------------------------


def test_retrieve_returns_points_in_the_order_asked_with_their_rows(index: VectorIndex) -> None:
    a = point([unit(0), mix({1: 1.0, 2: 1.0}), unit(3)], clause="4.1.2")
    b = point([unit(4)])
    index.upsert(COLLECTION, [a, b])

    hits = index.retrieve(COLLECTION, [b.id, str(uuid.uuid4()), a.id], with_vectors=True)

    assert [h.id for h in hits] == [b.id, a.id]
    assert hits[1].payload["clause"] == "4.1.2"
    assert hits[1].dense is not None and len(hits[1].dense) == 3
    for got, sent in zip(hits[1].dense, a.dense, strict=True):
        assert got == pytest.approx(normalised(sent), abs=1e-6)
    assert index.retrieve(COLLECTION, [a.id])[0].dense is None


def test_upserting_the_same_id_replaces_the_point(index: VectorIndex) -> None:
    first = point([unit(0)], version_id=1, text="loan")
    index.upsert(COLLECTION, [first])
    second = point([unit(6), unit(5)], version_id=2, text="collateral", point_id=first.id)
    index.upsert(COLLECTION, [second])

    assert index.count(COLLECTION) == 1
    (hit,) = index.retrieve(COLLECTION, [first.id], with_vectors=True)
    assert hit.payload["version_id"] == 2
    assert hit.dense == [pytest.approx(unit(6)), pytest.approx(unit(5))]
    assert index.search_dense(COLLECTION, unit(5), limit=1)[0].score == pytest.approx(1.0, abs=1e-5)
    assert index.search_sparse(COLLECTION, encode_query("loan"), limit=5) == []


# -- durability ------------------------------------------------------------


def test_points_survive_closing_and_reopening(open_index: Callable[[], VectorIndex]) -> None:
    first = open_index()
    first.ensure_collection(COLLECTION, DIM)
    p = point([unit(0), unit(1)], version_id=4, text="collateral haircut")
    first.upsert(COLLECTION, [p])
    first.close()

    reopened = open_index()
    assert reopened.list_collections() == [COLLECTION]
    assert reopened.count(COLLECTION, version_ids=[4]) == 1
    assert reopened.search_dense(COLLECTION, unit(1), limit=1)[0].id == p.id
    assert reopened.search_sparse(COLLECTION, encode_query("haircut"), limit=1)[0].id == p.id
    # the version payload index survives too: filtering still works
    assert reopened.search_dense(COLLECTION, unit(1), limit=1, version_ids=[5]) == []


# -- Edge specifics --------------------------------------------------------


def test_edge_serves_concurrent_readers_during_writes_and_close(tmp_path: Path) -> None:
    index = EdgeVectorIndex(tmp_path / "shards")
    index.ensure_collection(COLLECTION, DIM)
    index.upsert(COLLECTION, [point([unit(i % DIM)], text="loan") for i in range(50)])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                assert index.search_dense(COLLECTION, unit(1), limit=5)
                assert index.search_sparse(COLLECTION, encode_query("loan"), limit=5)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(10):
            index.upsert(COLLECTION, [point([unit(i % DIM)], text="loan") for _ in range(20)])
            index.close()  # readers wait for it, then the shard reopens lazily
    finally:
        stop.set()
        for t in threads:
            t.join()
    index.close()
    assert errors == []
    assert EdgeVectorIndex(tmp_path / "shards").count(COLLECTION) == 250


def test_edge_shard_held_by_another_index_is_unavailable(tmp_path: Path) -> None:
    owner = EdgeVectorIndex(tmp_path / "shards")
    owner.ensure_collection(COLLECTION, DIM)
    intruder = EdgeVectorIndex(tmp_path / "shards")
    try:
        with capture_logs() as logs, pytest.raises(IndexUnavailable, match="open in another process") as caught:
            intruder.count(COLLECTION)
    finally:
        intruder.close()
        owner.close()
    # The 503 goes to the client: the server's filesystem layout goes to the server log only.
    assert str(tmp_path) not in caught.value.detail
    assert any(str(tmp_path) in str(entry.get("path")) for entry in logs), logs


def test_edge_directory_that_is_not_a_shard_is_unavailable_without_its_path(tmp_path: Path) -> None:
    index = EdgeVectorIndex(tmp_path / "shards")
    (tmp_path / "shards" / COLLECTION).mkdir(parents=True)
    (tmp_path / "shards" / COLLECTION / "stray.txt").write_text("not a shard")
    try:
        with capture_logs() as logs, pytest.raises(IndexUnavailable, match="not a Qdrant Edge shard") as caught:
            index.ensure_collection(COLLECTION, DIM)
    finally:
        index.close()
    assert str(tmp_path) not in caught.value.detail
    assert any(str(tmp_path) in str(entry.get("path")) for entry in logs), logs


# -- server unavailable / factory -------------------------------------------


def _closed_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_index_unavailable() -> None:
    index = ServerVectorIndex.connect(f"http://127.0.0.1:{_closed_local_port()}", api_key=None)
    try:
        calls: list[Callable[[], object]] = [
            lambda: index.ensure_collection(COLLECTION, DIM),
            lambda: index.collection_exists(COLLECTION),
            lambda: index.search_dense(COLLECTION, unit(0), limit=3),
            lambda: index.search_sparse(COLLECTION, encode_query("loan"), limit=3),
            lambda: index.upsert(COLLECTION, [point([unit(0)])]),
            lambda: index.count(COLLECTION),
        ]
        for call in calls:
            with pytest.raises(IndexUnavailable, match="^vector index unavailable: ") as caught:
                call()
            assert caught.value.status_code == 503
    finally:
        index.close()


def test_factory_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    edge_index = open_vector_index(tmp_path / "shards", qdrant_url=None, api_key=None)
    server_index = open_vector_index(tmp_path / "shards", qdrant_url="https://127.0.0.1:6333", api_key="k")
    try:
        assert isinstance(edge_index, EdgeVectorIndex)
        assert isinstance(server_index, ServerVectorIndex)
        assert isinstance(edge_index, VectorIndex) and isinstance(server_index, VectorIndex)
        # constructing touched nothing on disk
        assert not (tmp_path / "shards").exists()
    finally:
        edge_index.close()
        server_index.close()
