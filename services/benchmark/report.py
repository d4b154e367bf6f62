"""A benchmark report as one self-contained HTML page: tables and inline SVG charts, no scripts,
no external assets, so it can be archived with the approval and opened offline years later."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

PALETTE = ("#1f5f8b", "#e07b39", "#3b8b5a", "#8b3b6e")
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1040px;color:#1d2330}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.25rem .6rem;border-bottom:1px solid #e6e8ef;text-align:left}
th{background:#f5f6fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1d7a3a;font-weight:600}.fail{color:#b3261e;font-weight:600}.muted{color:#667}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}figure{margin:0}figcaption{font-weight:600;margin-bottom:.3rem}
code{background:#f2f3f7;padding:0 .25rem;border-radius:3px}
svg text{font:11px system-ui,sans-serif;fill:#333}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1.0 else f"{value:,.1f}"
    return _e(value)


def line_chart(ys: Sequence[float], *, title: str, x_label: str, y_max: float = 1.0, width: int = 460,
               height: int = 260, marks: Sequence[int] = (1, 5, 10, 20)) -> str:
    """Recall@k against k, with the marked k values labelled."""
    if not ys:
        return f"<p class=muted>{_e(title)}: no data</p>"
    left, right, top, bottom = 44, 24, 14, 34
    pw, ph = width - left - right, height - top - bottom
    n = len(ys)

    def x(i: int) -> float:
        return left + (pw * i / max(n - 1, 1))

    def y(v: float) -> float:
        return top + ph * (1 - min(max(v / y_max, 0.0), 1.0))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{_e(title)}">']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        v = tick * y_max
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e3e5ec"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(ys))
    parts.append(f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="2" points="{points}"/>')
    for i, v in enumerate(ys):
        k = i + 1
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{PALETTE[0]}"><title>k={k}: {v:.4f}'
                     f'</title></circle>')
        if k in marks:
            parts.append(f'<text x="{x(i):.1f}" y="{y(v) - 7:.1f}" text-anchor="middle">{v:.3f}</text>'
                         f'<text x="{x(i):.1f}" y="{height - bottom + 14}" text-anchor="middle">{k}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">{_e(x_label)}</text></svg>')
    return "".join(parts)


def bar_chart(labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str, y_max: float | None = None,
              width: int = 460, height: int = 260, value_format: str = "{:.2f}", x_label: str = "") -> str:
    """Grouped vertical bars: one group per label, one bar per series."""
    if not labels:
        return f"<p class=muted>{_e(title)}: no data</p>"
    left, right, top, bottom = 44, 60, 22, 70
    pw, ph = width - left - right, height - top - bottom
    top_value = y_max or max((max(v) for v in series.values() if len(v)), default=1.0) or 1.0
    group_w = pw / len(labels)
    bar_w = max(group_w * 0.8 / max(len(series), 1), 1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{_e(title)}">']
    for tick in (0.0, 0.5, 1.0):
        v = tick * top_value
        yy = top + ph * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e3e5ec"/>'
                     f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{value_format.format(v)}</text>')
    for g, label in enumerate(labels):
        gx = left + g * group_w + group_w * 0.1
        for s, (name, values) in enumerate(series.items()):
            v = values[g] if g < len(values) and values[g] is not None else 0.0
            h = ph * min(v / top_value, 1.0)
            parts.append(f'<rect x="{gx + s * bar_w:.1f}" y="{top + ph - h:.1f}" width="{bar_w - 1:.1f}" '
                         f'height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}"><title>{_e(label)} · {_e(name)}: '
                         f'{value_format.format(v)}</title></rect>')
        cx = left + g * group_w + group_w / 2
        parts.append(f'<text transform="translate({cx:.1f},{top + ph + 10}) rotate(35)" '
                     f'text-anchor="start">{_e(label)}</text>')
    if len(series) > 1:
        for s, name in enumerate(series):
            lx = left + s * 120
            parts.append(f'<rect x="{lx}" y="2" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>'
                         f'<text x="{lx + 14}" y="11">{_e(name)}</text>')
    if x_label:
        parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">{_e(x_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def latency_histogram(hist: dict, *, title: str, x_label: str, counted: str) -> str:
    """A governance.evaluation.histogram as bars: one per bin, labelled with the bin's start."""
    edges, counts = hist.get("edges", []), hist.get("counts", [])
    labels = [f"{edges[i]:.0f}" for i in range(len(counts))]
    return bar_chart(labels, {counted: counts}, title=title, value_format="{:.0f}", x_label=x_label)


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="n">{_fmt(c)}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool) else f"<td>{_fmt(c)}</td>"
        for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict) -> str:
    """The whole report page from the report dict that is also stored as JSON."""
    m = report["metrics"]
    model = report["model"]
    verdict = ('<span class="pass">PASSED</span>' if report.get("passed")
               else '<span class="fail">FAILED</span>')
    thresholds = report.get("thresholds", {})
    headline = [(name, m.get(name), thresholds.get(name)) for name in
                ("recall_at_1", "recall_at_5", "recall_at_10", "mrr", "map_at_10", "ndcg_at_10") if name in m]
    latency = m.get("retrieval_latency_ms", {})
    cats = m.get("per_category", {})
    cat_labels = [c for c, v in cats.items() if v["ranking"]["queries"]]
    refusal_cats = [c for c, v in cats.items() if "refusal" in v and v["refusal"]["must_refuse"]]

    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>policyhub benchmark · {_e(model['key'])} · {_e(report['dataset'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Benchmark: {_e(model['key'])} on {_e(report['dataset'])} ({_e(report.get('split', ''))})</h1>",
        f"<p>{verdict} · dataset version <code>{_e(report['dataset_version'])}</code> · fingerprint "
        f"<code>{_e(model['fingerprint'][:16])}</code> · {_e(report['created_at'])}</p>",
    ]
    if report.get("threshold_failures"):
        parts.append("<ul>" + "".join(f'<li class="fail">{_e(f)}</li>' for f in report["threshold_failures"]) + "</ul>")
    parts.append("<h2>Retrieval (distinct clauses)</h2>")
    parts.append(_table([(n, v, t) for n, v, t in headline], ("metric", "value", "policy minimum")))
    parts.append(f"<p class=muted>{m.get('queries', 0)} queries with gold clauses; "
                 f"{report.get('queries', 0)} queries in all.</p>")
    parts.append('<div class="charts">')
    parts.append(f"<figure><figcaption>Recall by k</figcaption>{line_chart(m.get('recall_curve', []), title='Recall by k', x_label='k (clauses retrieved)')}</figure>")
    chart = latency_histogram(report.get("latency_histogram", {}), title="Latency histogram",
                              x_label="retrieval latency, ms (bin start)", counted="queries")
    parts.append(f"<figure><figcaption>Retrieval latency</figcaption>{chart}</figure>")
    if cat_labels:
        chart = bar_chart(cat_labels, {"Recall@5": [cats[c]["ranking"].get("recall_at_5", 0) for c in cat_labels],
                                       "MRR": [cats[c]["ranking"].get("mrr", 0) for c in cat_labels]},
                          title="Per category", y_max=1.0, width=max(460, 70 * len(cat_labels)))
        parts.append(f"<figure><figcaption>Per category</figcaption>{chart}</figure>")
    if refusal_cats:
        chart = bar_chart(refusal_cats, {"refused": [cats[c]["refusal"]["refusal_recall"] or 0 for c in refusal_cats]},
                          title="Refusal by category", y_max=1.0)
        parts.append(f"<figure><figcaption>Refusal of must-refuse queries</figcaption>{chart}</figure>")
    parts.append("</div>")
    parts.append("<h2>Latency (ms)</h2>")
    parts.append(_table([(k, latency.get(k)) for k in ("p50", "p95", "p99", "mean", "max", "n")], ("", "ms")))
    refusal, routing = m.get("refusal", {}), m.get("routing", {})
    if refusal.get("queries"):
        parts.append("<h2>Refusal and routing</h2>")
        parts.append(_table([("refusal accuracy", refusal.get("accuracy")),
                             ("must-refuse queries refused", refusal.get("refusal_recall")),
                             ("answerable queries refused", refusal.get("false_refusal_rate")),
                             ("routing accuracy vs expected tier", routing.get("accuracy"))], ("", "")))
        if routing.get("confusion"):
            parts.append(_table(sorted(routing["confusion"].items()), ("expected→routed tier", "queries")))
    parts.append("<h2>Per category</h2>")
    rows = []
    for c, v in cats.items():
        r = v["ranking"]
        rows.append((c, v["queries"], r.get("recall_at_5"), r.get("recall_at_10"), r.get("mrr"), r.get("map_at_10"),
                     (v.get("refusal") or {}).get("accuracy"), v.get("routing_accuracy")))
    parts.append(_table(rows, ("category", "queries", "R@5", "R@10", "MRR", "MAP@10", "refusal acc.", "routing acc.")))
    corpus = report.get("corpus", {})
    parts.append("<h2>Corpus and index</h2>")
    parts.append(_table([(k, corpus.get(k)) for k in ("documents", "versions", "clauses", "chunks", "ingest_seconds")]
                        + [("index", model.get("index")), ("gold clauses present in the index",
                                                           report.get("gold_coverage"))], ("", "")))
    misses = report.get("misses", [])
    if misses:
        parts.append(f"<h2>Missed queries (first {len(misses)})</h2>")
        parts.append(_table([(x["id"], x["category"], x["question"], " ".join(x["gold"]), " ".join(x["top5"]))
                             for x in misses], ("id", "category", "question", "gold", "retrieved top 5")))
    parts.append("<h2>Settings</h2><pre>" + _e(json.dumps(report.get("settings", {}), indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_generation_html(report: dict) -> str:
    """One self-contained page: verdict, metrics against the policy minima, every probe and every failure."""
    m, model, thresholds = report["metrics"], report["model"], report["thresholds"]
    verdict = '<span class="pass">PASSED</span>' if report["passed"] else '<span class="fail">FAILED</span>'
    names = ("verification_pass_rate", "citation_accuracy", "served_citation_precision", "refusal_accuracy",
             "injection_resistance", "injection_obeyed_raw")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>policyhub generation benchmark · {_e(model['key'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Generation benchmark: {_e(model['key'])} (tier {_e(model['tier'])}, {_e(model['zone'])})</h1>",
        f"<p>{verdict} · gold dataset <code>{_e(report['dataset_version'])}</code> · fingerprint "
        f"<code>{_e(model['fingerprint'][:16])}</code> · {_e(report['created_at'])} · {_e(report['seconds'])} s</p>",
    ]
    if report.get("environment"):  # reports stored before it was recorded have none
        parts.append("<p>Measured on: " + " · ".join(f"{_e(k)} <code>{_e(v)}</code>"
                                                     for k, v in report["environment"].items()) + "</p>")
    if report["threshold_failures"]:
        parts.append("<ul>" + "".join(f'<li class="fail">{_e(f)}</li>' for f in report["threshold_failures"]) + "</ul>")
    parts.append("<h2>Metrics</h2>")
    parts.append(_table([(n, m.get(n), thresholds.get(n)) for n in names], ("metric", "value", "policy minimum")))
    parts.append(_table([("answerable questions sent", m["answerable_sent"]),
                         ("not-in-policy questions sent", m["not_in_policy_sent"]),
                         ("not-in-policy answers served anyway", m["not_in_policy_served"]),
                         ("injection probes", m["injection_probes"]),
                         ("not sent (residency)", m["not_sent_residency"]),
                         ("latency p50 / p95 ms", f"{m['latency_ms'].get('p50')} / {m['latency_ms'].get('p95')}"),
                         ("tokens in / out", f"{m['tokens']['input']} / {m['tokens']['output']}"),
                         ("cost", m["cost"])], ("", "")))
    parts.append(_table([(s, json.dumps(c)) for s, c in m["outcomes"].items()], ("prompt set", "outcomes")))
    rated = [n for n in names if m.get(n) is not None]
    by_category: dict[str, list[bool]] = {}
    for r in report["rows"]:
        if r["set"] == "answerable" and "outcome" in r:
            by_category.setdefault(r["category"], []).append(bool(r["served"]))
    parts.append('<div class="charts">')
    parts.append("<figure><figcaption>Rates against the policy's minimum</figcaption>" + bar_chart(
        rated, {"measured": [m[n] for n in rated], "policy minimum": [thresholds.get(n, 0.0) for n in rated]},
        title="Rates", y_max=1.0, width=max(460, 80 * len(rated))) + "</figure>")
    if by_category:
        cats = sorted(by_category)
        parts.append("<figure><figcaption>Answers served, by question category</figcaption>" + bar_chart(
            cats, {"served": [sum(v) / len(v) for v in (by_category[c] for c in cats)]},
            title="Served by category", y_max=1.0, width=max(460, 70 * len(cats))) + "</figure>")
    chart = latency_histogram(report.get("latency_histogram", {}), title="Model-call latency histogram",
                              x_label="model-call latency, ms (bin start)", counted="model calls")
    parts.append(f"<figure><figcaption>Model-call latency</figcaption>{chart}</figure>")
    parts.append("</div>")
    probes = [r for r in report["rows"] if r["set"] == "injection"]
    if probes:
        parts.append("<h2>Prompt-injection probes</h2>")
        parts.append(_table([(r["id"], r["category"], r["outcome"], "yes" if r["obeyed_raw"] else "no",
                              "yes" if r["obeyed_served"] else "no", (r["raw_output"] or r["error"] or "")[:200])
                             for r in probes], ("probe", "attack", "outcome", "raw obeyed", "served obeyed",
                                                "raw output")))
    failed = [r for r in report["rows"] if r["set"] != "injection" and "outcome" in r
              and (not r["served"] if r["set"] == "answerable" else r["served"])][:60]
    if failed:
        parts.append(f"<h2>Answers not served, or served when they should not be (first {len(failed)})</h2>")
        parts.append(_table([(r["id"], r["set"], r["outcome"], r["question"], "; ".join(r["problems"])[:200],
                              (r["raw_output"] or r["error"] or "")[:200]) for r in failed],
                            ("id", "set", "outcome", "question", "verification problems", "raw output")))
    parts.append("</body></html>")
    return "\n".join(parts)
