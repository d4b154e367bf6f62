"""Integrity of the gold dataset: the corpus follows the clause format, every gold citation exists
in the named policy version, and the query mix is the one the README documents.

Model risk approves embedding and language models against this dataset, so a broken citation or a
mislabelled version would silently distort recall and refusal figures; these checks stop that at
review time rather than at benchmark time.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import yaml

from governance.policy import load_policy
from services.ingestion.segmenter import segment

pytestmark = pytest.mark.unit

DATASET = Path(__file__).resolve().parents[2] / "gold_dataset"
POLICY_FILES = sorted((DATASET / "policies").glob("*.md"))

FRONT_MATTER_KEYS = {"policy_id", "title", "version", "effective_date", "classification", "owner"}
QUERY_KEYS = {"id", "question", "gold", "category", "expected_tier", "expected_refusal", "as_of",
              "classification", "notes"}
REFUSING_CATEGORIES = {"not_in_policy": "not_in_policy", "prohibited": "prohibited_use"}
MIN_PER_CATEGORY = {"lookup": 50, "paraphrase": 35, "multi_clause": 25, "cross_policy": 20,
                    "version_specific": 20, "not_in_policy": 30, "prohibited": 15, "pii": 15}

# The clause grammar the segmenter is written against (see gold_dataset/README.md, "Policy format").
SECTION = re.compile(r"^## (\d+)\. (\S.*)$")
NUMBERED = re.compile(r"^(\d+(?:\.\d+)+) (\S.*)$")
SUB_ITEM = re.compile(r"^\(([a-z])\) (\S.*)$")
TITLE = re.compile(r"^# (\S.*)$")

# What a staff member pasting customer details would include.
PII_PATTERNS = [
    re.compile(r"\b[A-Z]{5}\d{4}[A-Z]\b"),          # PAN
    re.compile(r"\b\d{4} ?\d{4} ?\d{4}\b"),         # Aadhaar-like 12 digits
    re.compile(r"(?:\+91[ -]?)?\b\d{5} ?\d{5}\b"),  # Indian mobile number
    re.compile(r"\b[\w.]+@[\w.]+\.\w+\b"),          # email
    re.compile(r"\baccount \d{10,18}\b"),           # account number
]


@dataclass(frozen=True)
class Policy:
    path: Path
    meta: dict
    body: str
    clauses: dict[str, str]  # clause number -> text

    @property
    def key(self) -> tuple[str, str]:
        return self.meta["policy_id"], self.meta["version"]


def split_front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n"), "policy must open with a YAML front matter block"
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def regex_clauses(body: str) -> dict[str, str]:
    """Clause number -> text, following the documented grammar; sub-items hang off the last numbered clause."""
    clauses: dict[str, str] = {}
    last: str | None = None
    for line in body.splitlines():
        line = line.strip()
        if match := SECTION.match(line) or NUMBERED.match(line):
            last = match.group(1)
            assert last not in clauses, f"clause {last} appears twice"
            clauses[last] = match.group(2)
        elif match := SUB_ITEM.match(line):
            assert last is not None, f"sub-item before any clause: {line!r}"
            number = f"{last}.({match.group(1)})"
            assert number not in clauses, f"clause {number} appears twice"
            clauses[number] = match.group(2)
    return clauses


def load_policies() -> list[Policy]:
    policies = []
    for path in POLICY_FILES:
        meta, body = split_front_matter(path.read_text(encoding="utf-8"))
        policies.append(Policy(path, meta, body, regex_clauses(body)))
    return policies


POLICIES = load_policies()
BY_KEY = {policy.key: policy for policy in POLICIES}
VERSIONS: dict[str, list[Policy]] = defaultdict(list)
for _policy in POLICIES:
    VERSIONS[_policy.meta["policy_id"]].append(_policy)


def in_effect_on(policy_id: str, as_of: date) -> Policy | None:
    """Same rule as ingestion's `effective_on`: the latest effective date not after `as_of`."""
    eligible = [p for p in VERSIONS[policy_id] if p.meta["effective_date"] <= as_of]
    return max(eligible, key=lambda p: p.meta["effective_date"], default=None)


def latest(policy_id: str) -> Policy:
    return max(VERSIONS[policy_id], key=lambda p: p.meta["effective_date"])


def load_queries() -> list[dict]:
    lines = (DATASET / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines), "queries.jsonl must not contain blank lines"
    return [json.loads(line) for line in lines]


QUERIES = load_queries()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


# ---------------------------------------------------------------- corpus


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_front_matter_is_complete_and_valid(path: Path) -> None:
    meta, body = split_front_matter(path.read_text(encoding="utf-8"))
    assert set(meta) == FRONT_MATTER_KEYS
    assert re.fullmatch(r"[A-Z]{2,4}(-[A-Z]{2,4})?-\d{3}", meta["policy_id"])
    # Quoted in YAML so "2.0" does not become the float 2.0.
    assert isinstance(meta["version"], str) and re.fullmatch(r"\d+\.\d+", meta["version"])
    assert isinstance(meta["effective_date"], date)
    assert meta["classification"] in load_policy().classifications
    assert meta["owner"].strip() and meta["title"].strip()
    first_line = body.strip().splitlines()[0]
    assert TITLE.match(first_line) and first_line[2:] == meta["title"]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.path.name)
def test_policy_body_follows_the_clause_format(policy: Policy) -> None:
    lines = [line.strip() for line in policy.body.splitlines() if line.strip()]
    assert TITLE.match(lines[0])
    for line in lines[1:]:
        assert SECTION.match(line) or NUMBERED.match(line) or SUB_ITEM.match(line), f"orphan line: {line!r}"

    sections = [n for n in policy.clauses if "." not in n]
    assert 6 <= len(sections) <= 12
    assert sections == [str(i) for i in range(1, len(sections) + 1)], "sections must run 1..N"
    for number in policy.clauses:
        assert number.split(".")[0] in sections, f"clause {number} outside any section"
    for section in sections:
        assert f"{section}.1" in policy.clauses, f"section {section} has no numbered clauses"

    word_count = len(policy.body.split())
    assert 1200 <= word_count <= 3000, f"{word_count} words"


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.path.name)
def test_real_segmenter_finds_every_clause(policy: Policy) -> None:
    found = {clause.number: clause.text for clause in segment(policy.body)}
    missing = set(policy.clauses) - set(found)
    assert not missing, f"segmenter missed {sorted(missing)}"
    # Anything else the segmenter emits (the title as a preamble) must not look like a clause number.
    unexpected = [n for n in set(found) - set(policy.clauses) if n[:1].isdigit()]
    assert not unexpected, f"segmenter invented {sorted(unexpected)}"
    for number, text in policy.clauses.items():
        assert text in found[number], f"clause {number}: segmenter text differs"


def test_corpus_breadth_and_classification_mix() -> None:
    assert len(POLICY_FILES) == len(BY_KEY), "each (policy_id, version) must be one file"
    assert len(VERSIONS) >= 12
    classifications = Counter(p.meta["classification"] for p in POLICIES)
    assert classifications["confidential"] >= 2
    assert classifications["public"] >= 1
    assert classifications["internal"] > len(POLICIES) / 2


def test_at_least_three_policies_have_two_versions_that_differ() -> None:
    versioned = {pid: vs for pid, vs in VERSIONS.items() if len(vs) >= 2}
    assert len(versioned) >= 3
    for policy_id, versions in versioned.items():
        assert len({v.meta["effective_date"] for v in versions}) == len(versions), policy_id
        assert len({v.meta["version"] for v in versions}) == len(versions), policy_id
        old, new = sorted(versions, key=lambda v: v.meta["effective_date"])[-2:]
        changed = [n for n in old.clauses.keys() & new.clauses.keys() if old.clauses[n] != new.clauses[n]]
        assert len(changed) >= 3, f"{policy_id}: versions barely differ ({changed})"


def test_prompt_injection_example_is_an_ingested_clause() -> None:
    hits = [(p.key, n) for p in POLICIES for n, text in p.clauses.items()
            if "Ignore previous instructions" in text]
    assert hits == [(("ISC-SEC-001", "1.0"), "8.4")]


# ---------------------------------------------------------------- queries


def test_query_schema_and_ids() -> None:
    assert len(QUERIES) >= 200
    ids = [q["id"] for q in QUERIES]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"Q\d{3,}", i) for i in ids)
    questions = [q["question"].strip().lower() for q in QUERIES]
    assert len(set(questions)) == len(questions), "duplicate questions"
    classifications = set(load_policy().classifications)
    for q in QUERIES:
        assert set(q) == QUERY_KEYS, q["id"]
        assert q["category"] in MIN_PER_CATEGORY, q["id"]
        assert q["question"].strip() and q["notes"].strip(), q["id"]
        assert q["classification"] is None or q["classification"] in classifications, q["id"]
        assert q["expected_tier"] in (None, 0, 1, 2), q["id"]
        for ref in q["gold"]:
            assert set(ref) == {"policy_id", "version", "clause"}, q["id"]


def test_category_counts() -> None:
    counts = Counter(q["category"] for q in QUERIES)
    for category, minimum in MIN_PER_CATEGORY.items():
        assert counts[category] >= minimum, f"{category}: {counts[category]} < {minimum}"


def test_every_gold_clause_exists_in_the_named_version() -> None:
    for q in QUERIES:
        for ref in q["gold"]:
            policy = BY_KEY.get((ref["policy_id"], ref["version"]))
            assert policy is not None, f"{q['id']}: no policy {ref['policy_id']} v{ref['version']}"
            assert ref["clause"] in policy.clauses, f"{q['id']}: no clause {ref['clause']} in {policy.path.name}"


def test_refusals_and_answerable_queries_are_labelled_consistently() -> None:
    for q in QUERIES:
        refusal = REFUSING_CATEGORIES.get(q["category"])
        if refusal:
            assert q["gold"] == [] and q["expected_refusal"] == refusal and q["expected_tier"] is None, q["id"]
        else:
            assert q["gold"] and q["expected_refusal"] is None and q["expected_tier"] in (0, 1, 2), q["id"]


def test_category_shapes() -> None:
    for q in QUERIES:
        policy_ids = {ref["policy_id"] for ref in q["gold"]}
        if q["category"] == "lookup":
            assert len(q["gold"]) == 1 and q["expected_tier"] == 0, q["id"]
        elif q["category"] in ("paraphrase", "version_specific"):
            assert len(q["gold"]) == 1 and q["expected_tier"] in (0, 1), q["id"]
        elif q["category"] == "multi_clause":
            assert 2 <= len(q["gold"]) <= 3 and len(policy_ids) == 1 and q["expected_tier"] == 2, q["id"]
        elif q["category"] == "cross_policy":
            assert 2 <= len(q["gold"]) <= 3 and len(policy_ids) == 2 and q["expected_tier"] == 2, q["id"]
        elif q["category"] == "pii":
            assert any(p.search(q["question"]) for p in PII_PATTERNS), f"{q['id']}: no PII in the question"


def test_as_of_is_used_only_by_version_specific_queries_and_selects_the_version_in_effect() -> None:
    hit_versions: Counter[str] = Counter()
    for q in QUERIES:
        if q["category"] != "version_specific":
            assert q["as_of"] is None, q["id"]
            continue
        as_of = date.fromisoformat(q["as_of"])
        for ref in q["gold"]:
            assert len(VERSIONS[ref["policy_id"]]) >= 2, f"{q['id']}: policy has one version"
            policy = in_effect_on(ref["policy_id"], as_of)
            assert policy is not None and policy.meta["version"] == ref["version"], q["id"]
            hit_versions[ref["version"]] += 1
    assert hit_versions["1.0"] >= 5 and hit_versions["2.0"] >= 5, hit_versions


def test_undated_queries_cite_the_current_version() -> None:
    """Without as_of the answer comes from the version in force now; only a version comparison cites an older one."""
    for q in QUERIES:
        if q["as_of"] is not None:
            continue
        cited: dict[str, set[str]] = defaultdict(set)
        for ref in q["gold"]:
            cited[ref["policy_id"]].add(ref["version"])
        for policy_id, versions in cited.items():
            if len(versions) == 1:
                assert versions == {latest(policy_id).meta["version"]}, q["id"]
            else:
                assert q["category"] == "multi_clause", f"{q['id']}: version comparison outside multi_clause"


def test_questions_do_not_copy_their_gold_clauses() -> None:
    """A question that repeats a clause verbatim would measure string matching, not retrieval."""
    for q in QUERIES:
        question = words(q["question"])
        for ref in q["gold"]:
            clause = words(BY_KEY[(ref["policy_id"], ref["version"])].clauses[ref["clause"]])
            runs = {tuple(clause[i:i + 6]) for i in range(len(clause) - 5)}
            copied = [question[i:i + 6] for i in range(len(question) - 5) if tuple(question[i:i + 6]) in runs]
            assert not copied, f"{q['id']} copies {' '.join(copied[0])!r} from {ref['clause']}"


def test_dataset_version_is_recorded() -> None:
    version = (DATASET / "VERSION").read_text(encoding="utf-8").strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert f"Dataset version: {version}" in (DATASET / "README.md").read_text(encoding="utf-8")
