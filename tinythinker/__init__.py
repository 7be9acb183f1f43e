"""TinyThinker Studio: coarse-to-fine reasoning distillation (Piao & Park, NAACL 2025) for small students."""

from tinythinker.types import Option, Question, Rationale, Trace

__all__ = ["Option", "Question", "Rationale", "Trace"]
__version__ = "0.1.0"
