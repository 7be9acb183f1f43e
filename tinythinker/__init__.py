"""TinyThinker Studio: coarse-to-fine reasoning distillation (Piao & Park, NAACL 2025) for small students."""

from tinythinker.types import Option, Question, Rationale, Trace

# The offline student every command and the app start from. SmolLM2-135M-Instruct: on the same phase-1 budget it
# answered 40.1% of the CSQA validation split against MiniLM bert2bert's 23.4% (bench/RESULTS.md, issue 3).
DEFAULT_STUDENT = "smollm2-135m"

__all__ = ["DEFAULT_STUDENT", "Option", "Question", "Rationale", "Trace"]
__version__ = "0.1.0"
