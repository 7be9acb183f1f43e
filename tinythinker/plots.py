"""Plotly figures from runs (metrics.jsonl records, run summaries) and from model comparisons."""

from __future__ import annotations

from collections import defaultdict

import plotly.graph_objects as go
from plotly.subplots import make_subplots

_LAYOUT = dict(template="plotly_white", height=360, margin=dict(l=50, r=20, t=50, b=40))


def _empty(title: str, note: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, **_LAYOUT)
    return fig


def training_curves(records: list[dict], title: str = "Training") -> go.Figure:
    """Loss per logging step, one line per stage (the interval schedule shows as interleaved stages), and
    validation accuracy per evaluation below it."""
    train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
    dpo = [r for r in records if r.get("kind") == "dpo"]
    evals = [r for r in records if r.get("kind") == "eval" and r.get("accuracy") is not None]
    if not train and not evals and not dpo:
        return _empty(title, "no metrics yet")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("loss by stage" if not dpo else "DPO loss, NLL loss, reward margin",
                                        "validation accuracy"))
    by_stage: dict[str, list[dict]] = defaultdict(list)
    for r in train:
        by_stage[str(r.get("stage", "all"))].append(r)
    for stage, rows in by_stage.items():
        fig.add_trace(go.Scatter(x=[r.get("step", i) for i, r in enumerate(rows)], y=[r["loss"] for r in rows],
                                 mode="lines+markers", name=f"loss {stage}", marker_size=4), row=1, col=1)
    # Phase 2 (DPO + NLL): both loss terms and the reward margin the preference loss pushes up.
    for key in ("dpo_loss", "nll_loss", "rewards/margins"):
        rows = [r for r in dpo if r.get(key) is not None]
        if rows:
            fig.add_trace(go.Scatter(x=[r.get("step", i) for i, r in enumerate(rows)], y=[r[key] for r in rows],
                                     mode="lines+markers", name=key.replace("rewards/", "reward "), marker_size=4),
                          row=1, col=1)
    if evals:
        fig.add_trace(go.Scatter(x=[r.get("step", i) for i, r in enumerate(evals)],
                                 y=[r["accuracy"] for r in evals], mode="lines+markers", name="val accuracy"),
                      row=2, col=1)
    fig.update_yaxes(range=[0, 1], row=2, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(title=title, **{**_LAYOUT, "height": 480})
    return fig


def _iteration_accuracy(records: list[dict]) -> list[tuple[int, float]]:
    """Phase 2 records: the starting model's evaluation is iteration 0 ("baseline"), each finished iteration
    has one "iteration" record with its best validation accuracy (`val_acc`)."""
    points = {}
    for r in records:
        if r.get("kind") == "baseline" and r.get("accuracy") is not None:
            points[0] = float(r["accuracy"])
        elif r.get("kind") == "iteration" and r.get("val_acc") is not None:
            points[int(r["iteration"])] = float(r["val_acc"])
    return sorted(points.items())


def accuracy_by_iteration(records: list[dict], baseline: float | None = None,
                          title: str = "Self-reflection: validation accuracy by DPO iteration") -> go.Figure:
    """Phase 2: accuracy per iteration, with the phase-1 model as iteration 0 when `baseline` is given."""
    points = _iteration_accuracy(records)
    if baseline is not None and not any(i == 0 for i, _ in points):
        points = [(0, baseline)] + points
    if not points:
        return _empty(title, "no DPO iterations evaluated in this run")
    fig = go.Figure(go.Scatter(x=[i for i, _ in points], y=[a for _, a in points], mode="lines+markers+text",
                               text=[f"{a:.1%}" for _, a in points], textposition="top center"))
    fig.update_layout(title=title, xaxis_title="iteration (0 = phase 1)", yaxis_title="accuracy",
                      yaxis_range=[0, 1], xaxis_dtick=1, **_LAYOUT)
    return fig


def accuracy_by_stage_type(summaries: list[dict], title: str = "Best validation accuracy by stage type") -> go.Figure:
    """One bar per run, grouped by stage type: the paper's ablation (answer-only vs the three stages)."""
    rows = [s for s in summaries if s.get("best_accuracy") is not None]
    if not rows:
        return _empty(title, "no evaluated runs yet")
    fig = go.Figure()
    by_type: dict[str, list[dict]] = defaultdict(list)
    for s in rows:
        by_type[s.get("stage_type") or "?"].append(s)
    for stage_type, runs in sorted(by_type.items()):
        fig.add_trace(go.Bar(x=[r["name"] for r in runs], y=[r["best_accuracy"] for r in runs], name=stage_type,
                             text=[f"{r['best_accuracy']:.1%}" for r in runs], textposition="outside"))
    fig.update_layout(title=title, yaxis_title="accuracy", yaxis_range=[0, 1], **_LAYOUT)
    return fig


def flips(counts: dict[str, int], name_a: str = "A", name_b: str = "B") -> go.Figure:
    """How answers move from model A to model B over a split."""
    title = f"{name_a} -> {name_b}"
    if not counts or not sum(counts.values()):
        return _empty(title, "no questions compared")
    colours = {"both right": "#4caf50", "right->wrong": "#e53935", "wrong->right": "#1e88e5",
               "both wrong": "#9e9e9e"}
    keys = list(counts)
    fig = go.Figure(go.Bar(x=keys, y=[counts[k] for k in keys], marker_color=[colours.get(k, "#777") for k in keys],
                           text=[counts[k] for k in keys], textposition="outside",
                           cliponaxis=False))  # the tallest bar's count sits above the axis: keep it readable
    fig.update_layout(title=title, yaxis_title="questions", **_LAYOUT)
    return fig


def flip_rates_by_slice(rows: list[dict], slice_name: str | None = None, name_a: str = "A", name_b: str = "B",
                        title: str | None = None, max_bars: int = 30) -> go.Figure:
    """compare.slice_report rows: right->wrong and wrong->right rates per slice value, one group of bars each.

    `slice_name` keeps one slice (concept, gold letter, ...); None draws every slice, its values prefixed by it.
    At most `max_bars` values, the largest (a benchmark has hundreds of concepts)."""
    title = title or f"Flip rates by {slice_name or 'slice'}: {name_a} -> {name_b}"
    rows = [r for r in rows if slice_name in (None, r["slice"])]
    if len(rows) > max_bars:
        keep = sorted(range(len(rows)), key=lambda i: -rows[i]["n"])[:max_bars]
        rows = [rows[i] for i in sorted(keep)]
        title += f" (the {max_bars} largest)"
    if not rows:
        return _empty(title, "no questions in this slice")
    labels = [r["value"] if slice_name else f"{r['slice']}: {r['value']}" for r in rows]
    hover = [f"n={r['n']} · p={r['p_value']:.3g}" for r in rows]
    fig = go.Figure()
    for key, colour in (("right->wrong rate", "#e53935"), ("wrong->right rate", "#1e88e5")):
        fig.add_trace(go.Bar(x=labels, y=[r[key] for r in rows], name=key.replace(" rate", ""), marker_color=colour,
                             hovertext=hover, text=[f"{r[key]:.0%}" for r in rows], textposition="outside"))
    top = max(max(r["right->wrong rate"], r["wrong->right rate"]) for r in rows)
    fig.update_layout(title=title, barmode="group", yaxis_title="share of the slice's questions",
                      yaxis_range=[0, min(1.0, top * 1.25 + 0.05)], **{**_LAYOUT, "height": 420})
    return fig


def agreement_by_stage(rows: list[dict], title: str = "Annotator agreement by stage") -> go.Figure:
    """store.agreement.agreement_by_stage rows: kappa per stage (Cohen for two annotators, Fleiss for more)."""
    rows = [r for r in rows if r.get("kappa") is not None]
    if not rows:
        return _empty(title, "no item labelled by two annotators yet")
    fig = go.Figure(go.Bar(
        x=[r["stage"] for r in rows], y=[r["kappa"] for r in rows], marker_color="#7e57c2",
        text=[f"{r['kappa']:.2f} ({r['method']}, {r['items']} items)" for r in rows], textposition="outside"))
    fig.update_layout(title=title, yaxis_title="kappa", yaxis_range=[min(-0.2, *(r["kappa"] for r in rows)), 1.1],
                      **_LAYOUT)
    return fig


def pair_checks(rows: list[dict], title: str = "Pair checks") -> go.Figure:
    """pair_checks table rows: each numeric check's value, green when it passes and red when it fails."""
    rows = [r for r in rows if isinstance(r.get("value"), (int, float)) and not isinstance(r.get("value"), bool)]
    if not rows:
        return _empty(title, "no pairs checked")
    fig = go.Figure(go.Bar(
        y=[r["check"] for r in rows], x=[r["value"] for r in rows], orientation="h",
        marker_color=["#4caf50" if r["ok"] else "#e53935" for r in rows],
        text=[f"{r['value']:.3g} (want {r['threshold']})" for r in rows], textposition="auto"))
    fig.update_layout(title=title, xaxis_title="value", **{**_LAYOUT, "height": 80 + 40 * len(rows)})
    return fig
