"""The governance policy file: schema, loading and validation.

Everything a reviewer may change without a code change lives in `policy.yaml`:
classifications, residency, thresholds, prohibited uses, tiers, models, routing
limits, approval roles, how often the server checkpoints the audit chain and when an
approved FAQ answer may be served.
`load_policy` validates it and, on error, names the line of the offending value so
a bad file fails at start-up, not mid-request.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULT_POLICY_PATH = Path(__file__).with_name("policy.yaml")

Zone = Literal["onprem", "vpc", "cloud"]
ZONE_ORDER: tuple[Zone, ...] = ("onprem", "vpc", "cloud")  # most to least restricted


class PolicyError(ValueError):
    """The policy file is missing, unparsable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputRules(_Strict):
    max_question_chars: int = Field(gt=0)


class RetrievalRules(_Strict):
    candidate_chunks: int = Field(gt=0, le=500)
    # clauses taken from the clause-level BM25 over the whole visible corpus, besides the chunks' clauses
    candidate_clauses: int = Field(default=40, ge=0, le=1000)
    top_clauses: int = Field(gt=0, le=50)
    rrf_k: int = Field(gt=0)
    # Reciprocal-rank fusion weights: a clause's dense rank, its BM25 rank, and its chunk's
    # standing in the dense and sparse chunk searches.
    dense_weight: float = Field(default=1.0, ge=0.0)
    lexical_weight: float = Field(default=1.0, ge=0.0)
    chunk_weight: float = Field(default=0.5, ge=0.0)
    thresholds: dict[str, float] = {}
    default_threshold: float = Field(ge=-1.0, le=1.0)

    def threshold_for(self, model_key: str) -> float:
        """Threshold calibrated for an embedding model `name@version`."""
        return self.thresholds.get(model_key, self.default_threshold)


class PiiRules(_Strict):
    entities: list[str]
    min_score: float = Field(ge=0.0, le=1.0)
    classification: str


class ProhibitedCategory(_Strict):
    id: str
    reason: str
    keywords: list[str] = []
    exemplars: list[str] = []

    @field_validator("keywords")
    @classmethod
    def _regexes_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"keyword pattern {pattern!r} is not a valid regex: {exc}") from exc
        return value


class ProhibitedUses(_Strict):
    similarity_threshold: float = Field(gt=0.0, le=1.0)
    categories: list[ProhibitedCategory]


class TierSpec(_Strict):
    id: int = Field(ge=0, le=3)
    name: str
    description: str = ""


class ModelSpec(_Strict):
    name: str
    version: str
    tier: int = Field(ge=1, le=3)
    zone: Zone
    kind: Literal["llama_cpp", "openai"]
    path: str | None = None  # llama_cpp: file path or package:<pkg>/<file>
    base_url: str | None = None  # openai: endpoint; may be overridden by settings
    api_model: str | None = None  # openai: model id sent to the endpoint
    price_in_per_1k: float = Field(ge=0.0)
    price_out_per_1k: float = Field(ge=0.0)
    context_tokens: int = Field(gt=0)
    typical_latency_ms: int = Field(gt=0)
    timeout_s: float = Field(gt=0)
    # For a model that should keep to the clause's wording: the largest share of an answer's
    # content words that may appear in neither the clauses shown nor the question. None: no limit.
    max_new_word_share: float | None = Field(default=None, gt=0.0, le=1.0)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @model_validator(mode="after")
    def _kind_fields(self) -> ModelSpec:
        if self.kind == "llama_cpp" and not self.path:
            raise ValueError(f"model {self.key}: kind llama_cpp needs a path")
        if self.kind == "llama_cpp" and self.zone != "onprem":
            raise ValueError(f"model {self.key}: an in-process llama_cpp model is on-prem by definition")
        return self


class RoutingRules(_Strict):
    sla_tier1_max_ms: int = Field(gt=0)
    sla_tier2_max_ms: int = Field(gt=0)
    async_sla_min_ms: int = Field(default=10_000, gt=0)  # an SLA at least this long allows Tier-3
    retry_budget: int = Field(ge=0, le=10)
    per_request_cost_cap: float = Field(ge=0.0)
    daily_budget_per_user: float = Field(ge=0.0)
    # A multi-clause or comparison label the complexity classifier gave with a confidence below
    # `unsure_below` (no rule matched: a guess) starts at `unsure_start_tier` instead of tier 2.
    unsure_below: float = Field(default=0.5, ge=0.0, le=1.0)
    unsure_start_tier: int = Field(default=1, ge=0, le=2)


class RiskRules(_Strict):
    high_risk_topics: list[str] = []
    critical_topics: list[str] = []


class ApprovalRules(_Strict):
    required_signoffs: list[str]
    embedding_thresholds: dict[str, float]
    # Minimum metrics of a generation model's gold report (services.benchmark.generation); each in [0, 1].
    generation_thresholds: dict[str, float] = {}


class DriftRules(_Strict):
    recall_at_5_relative_drop: float = Field(gt=0.0, lt=1.0)


class AuditRules(_Strict):
    # The running server signs each moved chain head this often (0: never). Records newer than
    # the last checkpoint can be cut off undetected, so this bounds that window. Strict: a
    # quoted "60" or `yes` is a mistake in a reviewed file, not a number to guess at.
    checkpoint_interval_seconds: int = Field(ge=0, strict=True)


class FaqRules(_Strict):
    # An approved FAQ answer is served at Tier-0 only for a question whose embedding has at
    # least this cosine similarity to one of the FAQ's phrasings (and whose words and
    # numbers that phrasing holds: services.faq.matching).
    min_similarity: float = Field(ge=0.0, le=1.0, strict=True)
    max_answer_chars: int = Field(gt=0, le=10_000)
    max_questions: int = Field(gt=0, le=100)


class GovernancePolicy(_Strict):
    version: int
    classifications: list[str] = Field(min_length=1)
    residency: dict[str, list[Zone]]
    unknown_classification: str
    # Where a question with no declared classification starts (see residency.effective_classification).
    undeclared_classification: str
    input: InputRules
    retrieval: RetrievalRules
    pii: PiiRules
    prohibited_uses: ProhibitedUses
    tiers: list[TierSpec]
    models: list[ModelSpec] = []
    routing: RoutingRules
    risk: RiskRules
    approvals: ApprovalRules
    faq: FaqRules
    drift: DriftRules
    audit: AuditRules

    @field_validator("undeclared_classification")
    @classmethod
    def _undeclared_is_a_classification(cls, value: str, info: ValidationInfo) -> str:
        # Checked on the field, not in `_consistent`, so the error names the value's line.
        known = info.data.get("classifications")
        if known is not None and value not in known:
            raise ValueError(f"{value!r} is not a classification; expected one of {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GovernancePolicy:
        known = set(self.classifications)
        for name in self.residency:
            if name not in known:
                raise ValueError(f"residency names unknown classification {name!r}")
        for name in self.classifications:
            if name not in self.residency:
                raise ValueError(f"classification {name!r} has no residency rule")
        if self.unknown_classification not in known:
            raise ValueError(f"unknown_classification {self.unknown_classification!r} is not a classification")
        if self.pii.classification not in known:
            raise ValueError(f"pii.classification {self.pii.classification!r} is not a classification")
        keys = [m.key for m in self.models]
        if len(keys) != len(set(keys)):
            raise ValueError("models: the same name@version is listed twice")
        if not self.routing.sla_tier1_max_ms < self.routing.sla_tier2_max_ms < self.routing.async_sla_min_ms:
            raise ValueError("routing: need sla_tier1_max_ms < sla_tier2_max_ms < async_sla_min_ms")
        return self

    @cached_property
    def classification_rank(self) -> dict[str, int]:
        return {name: rank for rank, name in enumerate(self.classifications)}

    def model(self, key: str) -> ModelSpec | None:
        return next((m for m in self.models if m.key == key), None)


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Line (1-based) of the value at `loc` in a composed YAML tree."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            match = node.value[part]
        else:
            match = None
        if match is None:
            break
        node = match
        line = node.start_mark.line + 1
    return line


def parse_policy(text: str, source: str = "<policy>") -> GovernancePolicy:
    """Validate policy text; errors name the source, line and reason."""
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the policy must be a mapping at the top level")
    try:
        return GovernancePolicy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(tree, loc)
            where = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(f"{source}:{line or '?'}: {where}: {err['msg']}")
        raise PolicyError("invalid governance policy\n" + "\n".join(problems)) from None


def load_policy(path: Path | str | None = None) -> GovernancePolicy:
    """Load and validate the policy file (default: the reviewed `policy.yaml`)."""
    path = Path(path) if path else DEFAULT_POLICY_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the governance policy: {exc.strerror}") from exc
    return parse_policy(text, source=str(path))
