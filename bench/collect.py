"""Merge the benchmark outputs in bench/out/*.json into bench/results.json (the committed, machine-readable record).

    .venv/bin/python bench/collect.py

Each script writes its own file under bench/out (ignored by git, rewritten by every run); this keeps the latest
figures of every benchmark in one file, keyed as the issues ask: "phase1", "phase2", "pipeline_speed",
"store_speed", "app_latency".
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
RESULTS = Path(__file__).resolve().parent / "results.json"


def main() -> None:
    merged: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for path in sorted(OUT.glob("*.json")):
        data = json.loads(path.read_text())
        # phase1.json / phase2.json already nest under their own key; the others are keyed by file name.
        if isinstance(data, dict) and list(data) == [path.stem]:
            data = data[path.stem]
        merged[path.stem] = data
    RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    print(f"{RESULTS}: {', '.join(sorted(merged))}")


if __name__ == "__main__":
    main()
