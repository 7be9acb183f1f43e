"""The annotation store: every trace the students write, people's labels on them, and preference pairs.

    from tinythinker.store import Store
    with Store("annotations/tinythinker.db") as s:
        ids = s.import_traces(traces, model="runs/csqa-p1", iteration=0)
        s.label(ids[0], "recall", "bad", text="A better recall.", annotator="ana")
        s.add_pairs(auto_pairs, iteration=1, source="auto")   # phase 2
        s.curated_pairs(); s.export("annotations/reflection-v1", fmt="hf"); s.stats()
"""

from tinythinker.store.core import (
    DEFAULT_DB,
    ImportRecord,
    Label,
    ModelSpec,
    Store,
    StoredTrace,
    resolve_db_path,
)
from tinythinker.store.pairs import Pair, stage_prompt, stage_text
from tinythinker.store.schema import SCHEMA_VERSION
from tinythinker.store.validate import MAX_TEXT_CHARS, VERDICTS, StoreError

__all__ = [
    "DEFAULT_DB", "ImportRecord", "Label", "MAX_TEXT_CHARS", "ModelSpec", "Pair", "SCHEMA_VERSION", "Store",
    "StoreError", "StoredTrace", "VERDICTS", "resolve_db_path", "stage_prompt", "stage_text",
]
