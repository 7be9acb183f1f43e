"""Benchmarks -> Question, rationale sources -> Rationale, seeded splits. See docs/DATA.md."""

from tinythinker.data.benchmarks import (
    BENCHMARKS,
    ENV_DATA_DIR,
    LOCAL_FILES,
    SPLITS,
    USER_FORMATS,
    load_questions,
    resolve_data_dir,
)
from tinythinker.data.errors import DataError, MissingDataError
from tinythinker.data.rationales import (
    SOURCES,
    default_source,
    load_examples,
    load_rationales,
    rationale_coverage,
)
from tinythinker.data.splits import split_fingerprint

__all__ = [
    "BENCHMARKS", "ENV_DATA_DIR", "LOCAL_FILES", "SOURCES", "SPLITS", "USER_FORMATS", "DataError",
    "MissingDataError", "default_source", "load_examples", "load_questions", "load_rationales",
    "rationale_coverage", "resolve_data_dir", "split_fingerprint",
]
