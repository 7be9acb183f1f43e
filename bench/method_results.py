"""Issue 11's numbers from the evaluation traces in bench/out: accuracy with a 95% Wilson interval, top-answer
share and invalid rate per model on the same validation questions, and the flips between pairs of models with an
exact McNemar p-value. Writes bench/out/method.json (merged into bench/results.json by hand-checked keys) and
prints the markdown table RESULTS.md holds.

    .venv/bin/python bench/method_results.py --questions 300
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinythinker.compare import accuracy, mcnemar, paired  # noqa: E402
from tinythinker.pipeline import accuracy as pipeline_accuracy  # noqa: E402
from tinythinker.pipeline import read_traces  # noqa: E402

OUT = ROOT / "bench" / "out"
TRACES = ROOT / "bench" / "traces"  # committed: evaluation traces of the runs whose checkpoints are not kept
SHIPPED = ROOT / "demo" / "models"
# name -> (traces file, what it is); a file that is not there (bench/out is not committed) is left out. The
# val600 files (tenth session) are the val200 / val100 ones extended by `evaluate --resume`: their first lines are
# those files, so `--questions 200` gives the earlier numbers and `--questions 600` the first 600 questions.
OWN48 = "reflected, own recalls only, 48 questions x 8"
MODELS = {
    "answer-only LoRA": (OUT / "p1-sum-lora.val600.jsonl", "summarize, LoRA r=16, 140 steps"),
    "answer-only full FT": (OUT / "p1-sum-full.val600.jsonl", "summarize, full fine-tuning, 140 steps"),
    "full method, paper rhythm (shipped p1)": (SHIPPED / "tinythinker-smollm2-p1" / "traces" / "validation.jsonl",
                                               "recall_analyze_summarize, LoRA r=16, 105 steps, 15 on Summarize"),
    "full method, equal rhythm (shipped p1-equal)": (
        SHIPPED / "tinythinker-smollm2-p1-equal" / "traces" / "validation.jsonl",
        "recall_analyze_summarize --order equal, LoRA r=16, 210 steps, 70 on Summarize"),
    "answer-only LoRA, 210 steps": (TRACES / "p1-sum-lora210.val600.jsonl",
                                    "summarize, LoRA r=16, 210 steps (the equal-rhythm run's step count)"),
    # Twelfth session: the fifth session's answer-only command run again (its run folder was gone), float32 on
    # the first 600 (does it reproduce?), and shipped from its float16 adapter, traces on all 1,221.
    "answer-only LoRA, 210 steps, retrained": (TRACES / "p1-sum-lora210b.val600.jsonl",
                                               "the same command run again (twelfth session), float32 adapter"),
    "answer-only LoRA, 210 steps (shipped answer-only)": (
        SHIPPED / "tinythinker-smollm2-answer-only" / "traces" / "validation.jsonl",
        "the retrained run, float16 adapter, shipped as the answer-only baseline"),
    "equal rhythm + own-context Summarize": (TRACES / "p1-ctx-own.val200.jsonl",
                                             "p1-equal + 25 Summarize-only steps, half its own context"),
    "equal rhythm + teacher-context Summarize (control)": (TRACES / "p1-ctx-teacher.val200.jsonl",
                                                          "p1-equal + 25 Summarize-only steps, teacher context"),
    "reflected from equal rhythm": (SHIPPED / "tinythinker-smollm2-reflected" / "traces" / "validation.jsonl",
                                    "shipped reflected: phase 2 iteration 1 from p1-equal, 263 pairs from 32 questions"),
    "reflected from equal rhythm, iteration 2": (
        TRACES / "p2-equal-iter2b.val600.jsonl",
        "phase 2 iteration 2 from the shipped iteration 1 (332 pairs from 32 questions x 4 new samples), float16 adapter"),
    "reflected, own recalls only": (TRACES / "p2-own.val100.jsonl",
                                    "phase 2 iteration 1 from p1-equal, --no-teacher-fill (first 100 questions)"),
    # Thirteenth session: the two teacher-text probes extended to all 1,221 (each file begins with its val600 one).
    "equal rhythm, teacher's Recall+Analyze": (TRACES / "p1-equal.from-summarize.val1221.jsonl",
                                               "evaluate --from-stage summarize"),
    "reflected from paper rhythm (fourth session)": (TRACES / "p2-paper-rhythm.val60.jsonl",
                                                     "phase 2 iteration 1 from the paper-rhythm p1 (first 60 questions)"),
    "equal rhythm, option-free Recall": (TRACES / "p1-optfree.val200.jsonl",
                                         "p1-equal's recipe on --source ecqa-option-free, 210 steps"),
    "equal rhythm, option-free Recall, 420 steps": (
        TRACES / "p1-optfree420.val200.jsonl",
        "the option-free run + 210 more steps (second cosine cycle, seed 1), 140 on Summarize"),
    "option-free Recall, teacher's Recall+Analyze": (TRACES / "p1-optfree.from-summarize.val100.jsonl",
                                                     "evaluate --from-stage summarize (ECQA's own texts)"),
    "option-free Recall, 420 steps, teacher's Recall+Analyze": (
        TRACES / "p1-optfree420.from-summarize.val100.jsonl", "evaluate --from-stage summarize (ECQA's own texts)"),
    "answer-only LoRA, 420 steps": (TRACES / "p1-sum-lora420.val200.jsonl",
                                    "answer-only LoRA 210 + 210 more steps (second cosine cycle, seed 1)"),
    "option-free + own-context Summarize": (
        TRACES / "p1-optfree-ctx.val200.jsonl",
        "the option-free 210-step run + 105 Summarize-only steps on 300 training questions, each with the teacher's "
        "and with its own Recall/Analyze (175 Summarize steps in all)"),
    # The same runs on the 168 validation questions that neither leg of the 420-step runs trained on
    # (`evaluate --unseen-by runs/p1-sum-lora420`): their second legs drew their split with seed 1.
    "answer-only LoRA, 210 steps [unseen 168]": (TRACES / "p1-sum-lora210.unseen168.jsonl", "answer-only, 210 steps"),
    "answer-only LoRA, 420 steps [unseen 168]": (TRACES / "p1-sum-lora420.unseen168.jsonl", "answer-only, 420 steps"),
    "option-free Recall, 210 steps [unseen 168]": (TRACES / "p1-optfree.unseen168.jsonl", "full method, 210 steps"),
    "option-free Recall, 420 steps [unseen 168]": (TRACES / "p1-optfree420.unseen168.jsonl", "full method, 420 steps"),
    "equal rhythm, teacher's Recall": (TRACES / "p1-equal.from-analyze.val1221.jsonl",
                                       "evaluate --from-stage analyze: its own Analyze and Summarize"),
    "equal rhythm, teacher's option-free Recall": (
        TRACES / "p1-equal.from-analyze-optfree.val1221.jsonl",
        "p1-equal, evaluate --from-stage analyze --source ecqa-option-free (the questions it covers)"),
    "option-free Recall, teacher's option-free Recall": (
        TRACES / "p1-optfree.from-analyze.val100.jsonl",
        "evaluate --from-stage analyze --source ecqa-option-free (the 45 of 100 it covers)"),
    "full method, equal rhythm, full fine-tuning": (
        TRACES / "p1-eqfull.val200.jsonl", "p1-equal's recipe with --lora-r 0 --lr 5e-5 (the answer-only full-FT lr)"),
    "answer-only full FT, 210 steps": (TRACES / "p1-sum-full210.val200.jsonl",
                                       "answer-only LoRA 210's recipe with --lora-r 0 --lr 5e-5"),
    "shipped p1-equal, int8 weights": (TRACES / "p1-equal-int8.val200.jsonl",
                                       "evaluate --int8: the same student, int8 dynamic quantization"),
    # Fourteenth session: the two stage types issue 11's part 1 names that had not been run on SmolLM2, at the
    # recipe of record (p1-equal's command with another --stage-type: 210 steps, each stage 20 per visit).
    "recall + Summarize, equal rhythm": (TRACES / "p1-rs-equal.val600.jsonl",
                                         "recall_summarize --order equal, LoRA r=16, 210 steps, 105 on Summarize"),
    "analyze + Summarize, equal rhythm": (TRACES / "p1-as-equal.val600.jsonl",
                                          "analyze_summarize --order equal, LoRA r=16, 210 steps, 105 on Summarize"),
    # Seventeenth session: the --no-teacher-fill test on more questions (runs/s17a.sh).
    OWN48: (TRACES / "p2-own48.val1221.jsonl",
            "phase 2 iteration 1 from p1-equal, --no-teacher-fill, 48 training questions x 8 sampled recalls, float16 adapter"),
}
WHOLE_SPLIT = "answer-only LoRA, 210 steps (shipped answer-only)"
UNORDERED = "[unseen 168]"
PAIRS = [("answer-only LoRA, 210 steps (shipped answer-only)", "full method, equal rhythm (shipped p1-equal)"),
         ("full method, equal rhythm (shipped p1-equal)", OWN48),
         ("reflected from equal rhythm", OWN48),
         ("answer-only LoRA, 210 steps (shipped answer-only)", OWN48),
         ("answer-only LoRA, 210 steps (shipped answer-only)", "reflected from equal rhythm"),
         ("answer-only LoRA, 210 steps (shipped answer-only)", "full method, paper rhythm (shipped p1)"),
         ("answer-only LoRA, 210 steps", "answer-only LoRA, 210 steps, retrained"),
         ("answer-only LoRA, 210 steps, retrained", "answer-only LoRA, 210 steps (shipped answer-only)"),
         ("answer-only LoRA", "full method, paper rhythm (shipped p1)"),
         ("answer-only LoRA", "full method, equal rhythm (shipped p1-equal)"),
         ("full method, paper rhythm (shipped p1)", "full method, equal rhythm (shipped p1-equal)"),
         ("full method, paper rhythm (shipped p1)", "reflected from paper rhythm (fourth session)"),
         ("answer-only LoRA, 210 steps", "full method, equal rhythm (shipped p1-equal)"),
         ("full method, equal rhythm (shipped p1-equal)", "equal rhythm + own-context Summarize"),
         ("full method, equal rhythm (shipped p1-equal)", "equal rhythm + teacher-context Summarize (control)"),
         ("equal rhythm + teacher-context Summarize (control)", "equal rhythm + own-context Summarize"),
         ("answer-only LoRA, 210 steps", "equal rhythm + own-context Summarize"),
         ("full method, equal rhythm (shipped p1-equal)", "reflected from equal rhythm"),
         ("full method, equal rhythm (shipped p1-equal)", "reflected from equal rhythm, iteration 2"),
         ("reflected from equal rhythm", "reflected from equal rhythm, iteration 2"),
         ("full method, equal rhythm (shipped p1-equal)", "reflected, own recalls only"),
         ("reflected from equal rhythm", "reflected, own recalls only"),
         ("full method, equal rhythm (shipped p1-equal)", "equal rhythm, option-free Recall"),
         ("answer-only LoRA, 210 steps", "equal rhythm, option-free Recall"),
         ("equal rhythm, option-free Recall", "equal rhythm, option-free Recall, 420 steps"),
         ("answer-only LoRA, 210 steps", "answer-only LoRA, 420 steps"),
         ("answer-only LoRA, 420 steps", "equal rhythm, option-free Recall, 420 steps"),
         ("equal rhythm, option-free Recall", "option-free + own-context Summarize"),
         ("answer-only LoRA, 210 steps", "option-free + own-context Summarize"),
         ("full method, equal rhythm (shipped p1-equal)", "shipped p1-equal, int8 weights"),
         ("full method, equal rhythm (shipped p1-equal)", "full method, equal rhythm, full fine-tuning"),
         ("answer-only LoRA, 210 steps", "full method, equal rhythm, full fine-tuning"),
         ("answer-only LoRA, 210 steps", "answer-only full FT, 210 steps"),
         ("answer-only full FT, 210 steps", "full method, equal rhythm, full fine-tuning"),
         ("answer-only LoRA, 210 steps [unseen 168]", "answer-only LoRA, 420 steps [unseen 168]"),
         ("option-free Recall, 210 steps [unseen 168]", "option-free Recall, 420 steps [unseen 168]"),
         ("answer-only LoRA, 210 steps [unseen 168]", "option-free Recall, 210 steps [unseen 168]"),
         ("answer-only LoRA, 420 steps [unseen 168]", "option-free Recall, 420 steps [unseen 168]"),
         ("answer-only LoRA, 210 steps", "equal rhythm, teacher's Recall"),
         ("answer-only LoRA, 210 steps (shipped answer-only)", "equal rhythm, teacher's Recall"),
         ("answer-only LoRA, 210 steps (shipped answer-only)", "equal rhythm, teacher's Recall+Analyze"),
         ("full method, equal rhythm (shipped p1-equal)", "equal rhythm, teacher's Recall"),
         ("equal rhythm, teacher's Recall", "equal rhythm, teacher's Recall+Analyze"),
         ("answer-only LoRA, 210 steps", "equal rhythm, teacher's option-free Recall"),
         ("answer-only LoRA, 210 steps (shipped answer-only)", "equal rhythm, teacher's option-free Recall"),
         ("full method, equal rhythm (shipped p1-equal)", "equal rhythm, teacher's option-free Recall"),
         ("answer-only LoRA, 210 steps (shipped answer-only)", "recall + Summarize, equal rhythm"),
         ("answer-only LoRA, 210 steps (shipped answer-only)", "analyze + Summarize, equal rhythm"),
         ("recall + Summarize, equal rhythm", "full method, equal rhythm (shipped p1-equal)"),
         ("analyze + Summarize, equal rhythm", "full method, equal rhythm (shipped p1-equal)"),
         ("recall + Summarize, equal rhythm", "analyze + Summarize, equal rhythm")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=300, help="the first N validation questions, for every model")
    args = ap.parse_args()
    # "The first N questions" by position in the validation split's order (the shipped answer-only traces hold
    # all of it), not the first N lines: a --from-stage file skips the questions without teacher texts, so its
    # first N lines reach past question N. The [unseen 168] files are a subset of the whole split, kept whole.
    whole = {name: read_traces(file) for name, (file, _) in MODELS.items() if file.is_file()}
    order = {t.question.id: i for i, t in enumerate(whole[WHOLE_SPLIT])}
    traces = {name: ts if name.endswith(UNORDERED) else [t for t in ts if order[t.question.id] < args.questions]
              for name, ts in whole.items()}
    rows, flips = {}, {}
    print("| model | what | questions | accuracy (95% CI) | top-answer share | invalid |")
    print("|---|---|---|---|---|---|")
    for name, ts in traces.items():
        acc, extra = accuracy(ts), pipeline_accuracy(ts)
        rows[name] = {"file": str(MODELS[name][0].relative_to(ROOT)), "questions": len(ts), **acc, "top_answer_share":
                      extra["top_answer_share"], "invalid_rate": extra["invalid_rate"]}
        lo, hi = acc["ci_low"], acc["ci_high"]
        print(f"| {name} | {MODELS[name][1]} | {len(ts)} | {acc['accuracy']:.1%} ({lo:.1%}-{hi:.1%}) | "
              f"{extra['top_answer_share']:.2f} | {extra['invalid_rate']:.1%} |")
    print("\n| A | B | both right | A right, B wrong | A wrong, B right | both wrong | exact McNemar p |")
    print("|---|---|---|---|---|---|---|")
    for a, b in PAIRS:
        if a not in traces or b not in traces:
            continue
        pairs = paired(traces[a], traces[b])
        rw = sum(x.correct is True and y.correct is not True for x, y in pairs)
        wr = sum(x.correct is not True and y.correct is True for x, y in pairs)
        both = sum(x.correct is True and y.correct is True for x, y in pairs)
        test = mcnemar(rw, wr)
        test["accuracy_a"] = sum(x.correct is True for x, _ in pairs) / len(pairs)
        test["accuracy_b"] = sum(y.correct is True for _, y in pairs) / len(pairs)
        flips[f"{a} -> {b}"] = {"questions": len(pairs), "both_right": both, "right_to_wrong": rw,
                                "wrong_to_right": wr, "both_wrong": len(pairs) - both - rw - wr, **test}
        print(f"| {a} ({test['accuracy_a']:.1%}) | {b} ({test['accuracy_b']:.1%}) | {both} | {rw} | {wr} | "
              f"{len(pairs) - both - rw - wr} | {test['p_value']:.3g} |  ({len(pairs)} questions)")
    OUT.mkdir(exist_ok=True)
    (OUT / "method.json").write_text(json.dumps({"models": rows, "flips": flips}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
