"""Run `python -m tinythinker ...` with every module it may import lazily loaded up front.

A long run imports some modules only when it first needs them (the pipeline at its first evaluation); if the
source tree changes under it meanwhile, it mixes two versions and can crash after an hour of training. Long
benchmark runs go through this wrapper:

    .venv/bin/python bench/run_frozen.py train --data csqa ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tinythinker.commands.evaluate  # noqa: E402,F401
import tinythinker.commands.reflect  # noqa: E402,F401
import tinythinker.commands.train  # noqa: E402,F401
import tinythinker.data  # noqa: E402,F401
import tinythinker.dpo  # noqa: E402,F401
import tinythinker.pairs  # noqa: E402,F401
import tinythinker.phase1  # noqa: E402,F401
import tinythinker.phase2  # noqa: E402,F401
import tinythinker.pipeline  # noqa: E402,F401
import tinythinker.store  # noqa: E402,F401
import tinythinker.students  # noqa: E402,F401
from tinythinker.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
