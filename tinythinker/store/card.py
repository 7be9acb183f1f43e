"""The dataset card (README.md) of a store export: Hugging Face card format, YAML front matter then prose.

    prov = provenance(pairs, stored_traces)     # where the export's traces and pairs came from, as the store recorded
    text = dataset_card(manifest, name)         # the manifest (with prov under "provenance") as a card

The card records what a reader of the data cannot see in the rows themselves: the database and its schema version,
when the export was made, which pairs it holds and how many, the models, checkpoints and iterations that wrote the
traces and the pairs' two sides, and the pair checks (`tinythinker.pair_checks`) as they stood at export.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from tinythinker.pair_checks import markdown_table, side_origins

CARD = "README.md"
PAIR_SELECTION_TEXT = {
    "curated": "curated pairs: built from the labels in force (good over bad texts for one prompt, a corrected text "
               "over the original), pairwise choices, and curated pairs imported from another store",
    "auto": "automatic pairs: built by self-reflection (phase 2) from the student's own sampled traces, a text that "
            "led to the right answer over one that did not",
    "all": "every pair: the curated ones and those built by self-reflection (phase 2)",
}


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def provenance(pairs: list[Any], traces: list[Any]) -> dict[str, Any]:
    """Counts by where things came from: traces by (model, iteration) and the benchmarks of their questions;
    pairs by source, stage and iteration, and by the (model, iteration) of what wrote their sides (phase 2's
    starting checkpoint, or each side's trace for a curated pair), with the checkpoints and annotators their
    provenance names. `pairs` are store Pairs, `traces` StoredTraces."""
    by_model = Counter((st.model, st.iteration) for st in traces)
    benchmarks = Counter(st.trace.question.source or "unknown" for st in traces)

    writers: Counter[tuple[str, int | None]] = Counter()
    checkpoints: set[str] = set()
    annotators: set[str] = set()
    for p in pairs:
        prov = p.provenance if isinstance(p.provenance, dict) else {}
        seen: set[tuple[str, int | None]] = set()
        if isinstance(prov.get("model"), str):
            seen.add((prov["model"], p.iteration))
        for side in ("chosen", "rejected"):
            for o in side_origins(prov.get(side)):
                if isinstance(o.get("model"), str):
                    seen.add((o["model"], o.get("iteration")))
                if isinstance(o.get("checkpoint"), str) and o["checkpoint"] != o.get("model"):
                    checkpoints.add(o["checkpoint"])
                annotators.update(a for a in o.get("annotators") or [] if isinstance(a, str))
        annotators.update(a for a in prov.get("annotators") or [] if isinstance(a, str))
        writers.update(seen)
    return {
        "traces": {
            "by_model": [{"model": m, "iteration": i, "traces": n} for (m, i), n in sorted(by_model.items())],
            "benchmarks": dict(sorted(benchmarks.items())),
        },
        "pairs": {
            "by_source": dict(sorted(Counter(p.source for p in pairs).items())),
            "by_stage": dict(sorted(Counter(p.stage for p in pairs).items())),
            "by_iteration": {("none" if i is None else str(i)): n for i, n in
                             sorted(Counter(p.iteration for p in pairs).items(), key=lambda kv: (kv[0] is None,
                                                                                                  kv[0] or 0))},
            "by_model": [{"model": m, "iteration": i, "pairs": n} for (m, i), n in
                         sorted(writers.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or 0))],
            "checkpoints": sorted(checkpoints),
            "annotators": sorted(annotators),
        },
    }


def _q(value: Any) -> str:
    # A JSON string is a YAML string: no quoting rule of YAML can trip on a model path or a name.
    return json.dumps(str(value), ensure_ascii=False)


def _front_matter(manifest: dict[str, Any], name: str) -> str:
    lines = [
        "---",
        "license: unknown",
        "task_categories:",
        "- text-generation",
        "- question-answering",
        "language:",
        "- en",
        "tags:",
        "- tinythinker",
        "- dpo",
        "- preference",
        "- reasoning",
        "size_categories:",
        f"- {_size_category(max(manifest.get('pairs', 0), manifest.get('traces', 0)))}",
        f"pretty_name: {_q(f'TinyThinker preference pairs: {name}')}",
    ]
    if manifest.get("format") == "jsonl":
        # Lets `datasets.load_dataset(<this folder>, "pairs")` read the JSONL files as they lie.
        lines += ["configs:", "- config_name: pairs", "  data_files: pairs.jsonl", "  default: true",
                  "- config_name: traces", "  data_files: traces.jsonl"]
    return "\n".join([*lines, "---"])


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


def _model_rows(rows: list[dict[str, Any]], what: str) -> list[str]:
    if not rows:
        return ["(none recorded)"]
    out = [f"| model or checkpoint | iteration | {what} |", "|---|---|---|"]
    for r in rows:
        model = str(r["model"]).replace("|", "\\|")
        out.append(f"| `{model}` | {'-' if r['iteration'] is None else r['iteration']} | {r[what]} |")
    return out


def dataset_card(manifest: dict[str, Any], name: str) -> str:
    """README.md for an export folder named `name`, from its manifest (see files.export_store)."""
    prov = manifest.get("provenance") or provenance([], [])
    tp, pp = prov["traces"], prov["pairs"]
    checks = manifest.get("pair_checks") or {}
    fmt = manifest.get("format")
    selection = manifest.get("pair_selection", "curated")
    files = ", ".join(f"`{f}`" for f in manifest.get("files", []))
    if checks.get("ok"):
        verdict = f"All {checks.get('n', 0)} pairs pass every check."
    else:
        verdict = (f"**{len(checks.get('failed', []))} check(s) fail** on these {checks.get('n', 0)} pairs: "
                   f"{', '.join(checks.get('failed', []))}. Read the table before training on them.")
    if fmt == "hf":
        load = ["```python", "from datasets import load_from_disk", "",
                'pairs = load_from_disk("pairs")    # provenance is a JSON string column',
                'traces = load_from_disk("traces")  # trace and labels are JSON string columns', "```"]
    else:
        load = ["```python", "from datasets import load_dataset", "",
                'pairs = load_dataset("json", data_files="pairs.jsonl", split="train")', "```"]
    text = [
        _front_matter(manifest, name), "",
        f"# TinyThinker preference pairs: {name}", "",
        "Preference pairs (prompt, chosen, rejected) for DPO on the stages of TinyThinker's staged reasoning "
        "(Recall, Analyze, Summarize), with the labelled traces they were built from. Exported by TinyThinker "
        "Studio from its annotation store.", "",
        "## Export", "",
        f"- store: `{manifest.get('db')}` (schema version {manifest.get('schema_version')})",
        f"- exported at: {manifest.get('exported_at')} (UTC)",
        f"- format: {fmt} ({files})",
        f"- pairs: {manifest.get('pairs', 0)}, {PAIR_SELECTION_TEXT.get(selection, selection)}",
        f"- pairs by source: {_counts(pp['by_source'])}; by stage: {_counts(pp['by_stage'])}; "
        f"by iteration: {_counts(pp['by_iteration'])}",
        f"- traces: {manifest.get('traces', 0)} (every trace with a label, undone ones included, each with its "
        f"label history: {manifest.get('labels', 0)} labels); questions by benchmark: {_counts(tp['benchmarks'])}",
        "",
        "## Provenance", "",
        "Which model (a run folder, a checkpoint or a hub id) and which self-reflection iteration (0: before any) "
        "wrote what, as the store recorded it. Each pair's `provenance` field holds the same per pair: the traces "
        "(store ids) its two sides came from, with their model, checkpoint, iteration and sampling, and for a "
        "curated pair its labels and annotators.", "",
        "Traces:", "", *_model_rows(tp["by_model"], "traces"), "",
        "Pairs, by what wrote their sides (a pair counts once for each model among its sides):", "",
        *_model_rows(pp["by_model"], "pairs"), "",
    ]
    if pp["checkpoints"]:
        text += ["Checkpoints the pairs' sides name beside their model: "
                 + ", ".join(f"`{c}`" for c in pp["checkpoints"]), ""]
    if pp["annotators"]:
        text += [f"Annotators: {', '.join(pp['annotators'])}", ""]
    text += [
        "## Pair checks", "",
        "Run at export (`tinythinker.pair_checks`): the share of pairs whose chosen side led to the right answer "
        "and rejected side to a wrong one, duplicates, contradictions, identical sides, length balance and "
        "answer-letter balance.", "",
        verdict, "",
        markdown_table(checks.get("checks", [])) if checks.get("checks") else "(no checks recorded)", "",
        "## Use", "", *load, "",
        "Into another TinyThinker store: `python -m tinythinker store import-pairs <this folder>` (pairs) and "
        "`python -m tinythinker store import <this folder>` (traces with their labels).", "",
        "## License", "",
        "Unknown: the questions come from the benchmarks named above, under their own licenses, and the texts were "
        "written by the models named above. Check both before redistributing.", "",
    ]
    return "\n".join(text)
