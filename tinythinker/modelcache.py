"""Students loaded once per process and shared: an interactive UI must not reload weights on every click."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path


class StudentCache:
    """Least-recently-used cache of loaded students keyed by name or folder (and the folder's weights' mtime,
    so a checkpoint rewritten by a training run is loaded again rather than served stale). With `int8`, every
    student is served with int8 weights (`Student.quantize_int8`: faster on CPU, but many answers differ from
    fp32's)."""

    def __init__(self, capacity: int = 3, loader=None, int8: bool = False):
        self.capacity = capacity
        self.loader = loader
        self.int8 = int8
        self._items: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    @staticmethod
    def _key(name_or_path: str | Path) -> tuple:
        path = Path(name_or_path)
        if path.is_dir():
            stamp = max((p.stat().st_mtime for p in path.iterdir() if p.is_file()), default=0.0)
            return (str(path.resolve()), stamp)
        return (str(name_or_path), 0.0)

    def get(self, name_or_path: str | Path):
        key = self._key(name_or_path)
        # One lock around the load too: two clicks on a cold model must not load it twice at once.
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            if self.loader is None:
                # Imported on first use: torch and transformers take seconds, which app start-up should not pay.
                from tinythinker.students import load_student

                self.loader = load_student
            student = self.loader(str(name_or_path))
            if hasattr(student, "merge_adapter"):
                student.merge_adapter()  # the app only generates: a LoRA adapter folded in runs faster
            if self.int8 and hasattr(student, "quantize_int8") and student.device.type == "cpu":
                student.quantize_int8()  # on a GPU the student stays fp32: these kernels are CPU-only
            self.loads += 1
            self._items[key] = student
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return student
