"""`python -m tinythinker teach`: rationales from an LLM teacher over an OpenAI-compatible API."""

from __future__ import annotations

import argparse
import json
import sys

from tinythinker.commands.presets import PAPER, add_preset, resolve
from tinythinker.teacher.prompt import DEFAULT_SHOTS, build_messages, load_prompts
from tinythinker.teacher.run import DEFAULT_SAMPLES, TeacherConfig, format_summary, run_teacher
from tinythinker.teacher.select import DISAGREEMENT_POLICIES

# `--preset paper`: the paper's notebook (datasets/Prompt Engineering.ipynb), whatever the defaults are; flags given on
# the command line still win. None means the benchmark's paper value: samples 8 / 4 / 4 (csqa / obqa / strategyqa,
# teacher.run.DEFAULT_SAMPLES), all of them kept, shots 8 / 7 / 8 (teacher.prompt.DEFAULT_SHOTS). The notebook's
# diversity rule (a recall is distinct when its Levenshtein distance to every other exceeds 10) is not a flag:
# teacher.select.DIVERSITY_THRESHOLD.
PRESETS: dict[str, dict] = {
    PAPER: {
        "model": "gpt-4o-2024-05-13",
        "samples": None,
        "keep": None,
        "shots": None,
        "temperature": 0.8,
        "rounds": 3,
        "on_disagreement": "follow-teacher",
    },
}


def register(subparsers) -> None:
    d = TeacherConfig()
    p = subparsers.add_parser(
        "teach", help="generate teacher rationales with an LLM over an OpenAI-compatible API",
        description="Asks an LLM teacher (OpenAI, or any server speaking the OpenAI chat API: vLLM, Ollama, "
                    "llama.cpp, TGI) for rationales as in the paper's notebook: few-shot examples plus the question "
                    "with the gold answer's line opened. Answers are parsed, voted, filtered and written to "
                    "OUT/rationales.jsonl, which `train --source OUT` reads. Every answer is cached in "
                    "OUT/cache.jsonl: rerunning the same command is free, and an interrupted run resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", default="csqa", help="benchmark: csqa, obqa, strategyqa, or jsonl with --path")
    p.add_argument("--path", default=None, help="your own questions file, with --data jsonl")
    p.add_argument("--split", default="train", choices=["train", "validation", "test"])
    p.add_argument("--data-dir", default=None, help="local data folder (else env TINYTHINKER_DATA_DIR)")
    p.add_argument("--limit", type=int, default=None, help="teach the first N questions of the split")
    p.add_argument("--out", required=True, help="output folder (rationales.jsonl, summary.json, cache.jsonl)")
    p.add_argument("--base-url", default=d.base_url, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 "
                   "(default: OpenAI)")
    p.add_argument("--model", default=d.model)
    p.add_argument("--api-key-env", default=d.api_key_env, help="environment variable holding the API key "
                   "(not needed for a local --base-url)")
    p.add_argument("--samples", type=int, default=None,
                   help=f"answers asked per question (default per benchmark: {DEFAULT_SAMPLES}, else 8)")
    p.add_argument("--keep", type=int, default=None, help="rationales kept per question (default: --samples)")
    p.add_argument("--shots", type=int, default=None,
                   help=f"few-shot examples in the prompt (default per benchmark: {DEFAULT_SHOTS})")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--rounds", type=int, default=d.rounds,
                   help="requests per question at most: the first, then re-asks for dropped answers")
    p.add_argument("--on-disagreement", default=d.on_disagreement, choices=DISAGREEMENT_POLICIES,
                   help="when the teacher's majority verdict differs from the gold label: adopt the teacher's "
                        "(the paper) or drop the question")
    p.add_argument("--prompts", default=None, help="few-shot examples JSON file (default: tinythinker/prompts/"
                   "<data>.json)")
    p.add_argument("--instruction", default=None, help="instruction text file (default: tinythinker/prompts/"
                   "instruction.txt)")
    p.add_argument("--timeout", type=float, default=d.timeout, help="seconds per HTTP request")
    p.add_argument("--max-retries", type=int, default=d.max_retries,
                   help="retries (exponential backoff) on connection errors, timeouts, 429 and 5xx")
    p.add_argument("--workers", type=int, default=d.workers, help="questions asked in parallel")
    p.add_argument("--max-consecutive-failures", type=int, default=d.max_consecutive_failures,
                   help="stop asking after this many questions failed in a row (server down)")
    p.add_argument("--price-in", type=float, default=d.price_in_per_1k, help="USD per 1k prompt tokens")
    p.add_argument("--price-out", type=float, default=d.price_out_per_1k, help="USD per 1k completion tokens")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="print the first question's messages and ask nothing")
    add_preset(p, PRESETS, "paper: the paper's notebook (gpt-4o-2024-05-13, samples 8 / 4 / 4 per benchmark, all "
                           "kept, temperature 0.8, its shots, 3 rounds, follow the teacher's verdict); flags given "
                           "explicitly still win")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TeacherConfig:
    resolve(args, PRESETS)
    return TeacherConfig(
        model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
        benchmark=args.data, samples=args.samples, keep=args.keep, shots=args.shots,
        temperature=args.temperature, max_tokens=args.max_tokens, rounds=args.rounds,
        on_disagreement=args.on_disagreement, timeout=args.timeout, max_retries=args.max_retries,
        workers=args.workers, max_consecutive_failures=args.max_consecutive_failures, seed=args.seed,
        price_in_per_1k=args.price_in, price_out_per_1k=args.price_out, examples_path=args.prompts,
        instruction_path=args.instruction, progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    from tinythinker.data import load_questions

    cfg = config_from_args(args).resolved()
    questions = load_questions(args.data, args.split, data_dir=args.data_dir, seed=args.seed, limit=args.limit,
                               path=args.path)
    if not questions:
        raise ValueError(f"no questions in {args.data} {args.split}")
    if args.dry_run:
        prompts = load_prompts(cfg.benchmark, cfg.examples_path, cfg.instruction_path)
        for m in build_messages(prompts, questions[0], cfg.shots):
            print(f"--- {m['role']} ---\n{m['content']}")
        print(f"--- would ask {len(questions)} question(s) x {cfg.samples} sample(s) of {cfg.model} ---")
        return 0
    try:
        summary = run_teacher(questions, cfg, args.out)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the answers received so far are cached in {args.out}/cache.jsonl; "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    print(format_summary(summary))
    print(f"wrote {summary['statuses']['kept']} question(s) to {args.out}/rationales.jsonl "
          f"(summary: {args.out}/summary.json)")
    if summary["statuses"]["failed"] or summary["statuses"]["not_attempted"]:
        print(json.dumps({"failed": summary["not_kept"]["failed"][:10],
                          "not_attempted": len(summary["not_kept"]["not_attempted"])}), file=sys.stderr)
        return 1
    return 0
