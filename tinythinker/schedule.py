"""The paper's interval schedule as a batch sampler that a stock `transformers.Trainer` consumes.

Phase 1 trains one model on three stage datasets. The paper switches between them on a fixed rhythm:
`interval` optimizer steps on Recall, `interval x number_of_options` on Analyze (it has one example per option),
`interval` on Summarize, and again; a stage whose data is used up for this epoch is skipped until all are.

The paper's code got there by copying the Trainer's training loop. Here the rhythm lives in the *order of the
batches*: the sampler yields batches of indices into one concatenated dataset, so the Trainer's own loop,
checkpointing, resumption (it skips already-seen batches) and distributed sharding all keep working.

Distributed: accelerate wraps a batch sampler in `BatchSamplerShard`, which hands process p the batches
p, p + world, p + 2 world, ... So each optimizer step is emitted as `world_size x grad_accum` consecutive
batches of the same stage: every process, and every micro-batch of the step, trains the same stage.

Phase 2's schedule (`dpo_order`) is the paper's scripts/dpo.py rhythm over preference pairs: recall pairs, then
analyze pairs, for a number of cycles. It takes the pairs' stage names, so that this module imports nothing of ours.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

import torch

# "interval" is the paper's rhythm. "equal" is the same rhythm with `interval` steps per visit for every stage, Analyze
# included, so that Summarize gets a third of the steps instead of 1/(n_options + 2): the "budget" hypothesis of
# a CPU run whose step count is far below the paper's ten epochs. "mixed" is the no-schedule ablation.
ORDERS = ("interval", "equal", "mixed")


def stage_multipliers(stages: Sequence[str], n_options: int, order: str = "interval") -> dict[str, int]:
    """Steps per visit, in units of `interval`: Analyze has one example per option, so the paper gives it that many
    times more; `order="equal"` gives every stage the same."""
    return {s: (n_options if s == "analyze" and order != "equal" else 1) for s in stages}


def interval_order(steps: dict[str, int], stages: Sequence[str], interval: int, n_options: int,
                   order: str = "interval") -> list[str]:
    """The stage of every optimizer step in one epoch, given how many steps each stage's data fills.

    Visit the stages in order, `interval x multiplier` steps each, skipping a stage once its steps are used up,
    until every stage is used up.
    """
    if interval < 1:
        raise ValueError(f"interval must be at least 1, got {interval}")
    mult = stage_multipliers(stages, n_options, order)
    left = {s: steps.get(s, 0) for s in stages}
    order: list[str] = []
    while any(left.values()):
        for s in stages:
            take = min(left[s], interval * mult[s])
            order.extend([s] * take)
            left[s] -= take
    return order


def cycle_steps(stages: Sequence[str], interval: int, n_options: int, order: str = "interval") -> int:
    """Length in optimizer steps of one full schedule cycle while no stage is used up."""
    mult = stage_multipliers(stages, n_options, order)
    return interval * sum(mult[s] for s in stages)


class StageBatchSampler(torch.utils.data.Sampler):
    """Yields lists of indices into the concatenation of the stage datasets (in `stages` order).

    `sizes[s]` is the number of examples of stage s. Each epoch every stage is shuffled (seed + epoch), cut into
    optimizer steps of `batch_size x world_size x grad_accum` examples (the last one topped up from the start of
    the same shuffled stage so that every process gets full batches), and the steps are ordered by the schedule.
    `order="equal"` is the same rhythm with every stage at `interval` steps per visit; `order="mixed"` is the ablation: all examples of all stages shuffled together, no schedule.
    """

    def __init__(self, sizes: dict[str, int], stages: Sequence[str], *, batch_size: int, interval: int,
                 n_options: int, seed: int = 0, order: str = "interval", world_size: int = 1,
                 grad_accum: int = 1, lengths: Sequence[int] | None = None):
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        empty = [s for s in stages if sizes.get(s, 0) == 0]
        if empty:
            raise ValueError(f"no training examples for stage(s) {', '.join(empty)}")
        self.sizes = {s: sizes[s] for s in stages}
        self.stages = tuple(stages)
        self.batch_size = batch_size
        self.interval = interval
        self.n_options = n_options
        self.seed = seed
        self.order = order
        self.per_step = world_size * grad_accum  # batches in one optimizer step
        self.epoch = 0
        offsets, total = {}, 0
        for s in self.stages:
            offsets[s] = total
            total += self.sizes[s]
        self.offsets = offsets
        self.total = total
        if lengths is not None and len(lengths) != total:
            raise ValueError(f"lengths has {len(lengths)} entries for {total} examples")
        # With lengths, each stage segment's batches are regrouped by length (`_group_by_length`).
        self.lengths = list(lengths) if lengths is not None else None

    def set_epoch(self, epoch: int) -> None:
        # The Trainer calls this at each epoch start (also when it resumes mid-epoch), so a resumed run
        # replays exactly the batch order of the run it continues.
        self.epoch = epoch

    def _step_examples(self) -> int:
        return self.batch_size * self.per_step

    def steps_per_stage(self) -> dict[str, int]:
        n = self._step_examples()
        return {s: math.ceil(self.sizes[s] / n) for s in self.stages}

    def step_stages(self) -> list[str]:
        """The stage of every optimizer step of an epoch (the same for every epoch); 'mixed' for the ablation."""
        if self.order == "mixed":
            return ["mixed"] * math.ceil(self.total / self._step_examples())
        return interval_order(self.steps_per_stage(), self.stages, self.interval, self.n_options, self.order)

    def __len__(self) -> int:
        return len(self.step_stages()) * self.per_step

    def _fill(self, indices: list[int], n_steps: int) -> list[int]:
        need = n_steps * self._step_examples()
        reps = math.ceil(need / len(indices))
        return (indices * reps)[:need]

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        n = self._step_examples()
        if self.order == "mixed":
            pool = list(range(self.total))
            rng.shuffle(pool)
            steps = [pool[i:i + n] for i in range(0, len(pool), n)]
            steps[-1] = self._fill(steps[-1], 1) if len(steps[-1]) < n else steps[-1]
        else:
            per_stage: dict[str, list[list[int]]] = {}
            for s, k in self.steps_per_stage().items():
                idx = [self.offsets[s] + i for i in range(self.sizes[s])]
                rng.shuffle(idx)
                idx = self._fill(idx, k)
                per_stage[s] = [idx[i:i + n] for i in range(0, len(idx), n)]
            cursor = dict.fromkeys(self.stages, 0)
            steps = []
            for s in self.step_stages():
                steps.append(per_stage[s][cursor[s]])
                cursor[s] += 1
        if self.lengths is not None and self.order != "mixed":
            steps = self._group_by_length(steps, self.step_stages(), rng)
        for step in steps:
            for b in range(self.per_step):
                yield step[b * self.batch_size:(b + 1) * self.batch_size]

    def _group_by_length(self, steps: list[list[int]], stages: list[str], rng: random.Random) -> list[list[int]]:
        """Within each run of consecutive steps of one stage, the same examples regrouped so that a batch holds
        similar lengths (sorted, cut into steps, the steps shuffled): Analyze's short rows then no longer pad to
        the long ones. The stage of every step, and which examples a segment trains on, do not change."""
        out: list[list[int]] = []
        start = 0
        while start < len(steps):
            end = start
            while end < len(steps) and stages[end] == stages[start]:
                end += 1
            pool = [i for step in steps[start:end] for i in step]
            pool.sort(key=lambda i: self.lengths[i])  # stable: equal lengths keep their shuffled order
            n = self._step_examples()
            segment = [pool[i:i + n] for i in range(0, len(pool), n)]
            rng.shuffle(segment)
            out += segment
            start = end
        return out

    def stage_of_index(self, index: int) -> str:
        for s in reversed(self.stages):
            if index >= self.offsets[s]:
                return s
        raise IndexError(index)


def dpo_cycle_steps(n_recall: int, n_analyze: int, batch_size: int) -> tuple[int, int]:
    """Steps per cycle on recall pairs and on analyze pairs, as scripts/dpo.py sets them:
    `recall_interval = n_recall // batch + 1`, `analyze_interval = (n_analyze // n_recall + 1) * recall_interval`
    (with pairs of one stage only, `n // batch + 1` steps of it)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if n_recall:
        r_steps = n_recall // batch_size + 1
        return r_steps, ((n_analyze // n_recall + 1) * r_steps if n_analyze else 0)
    return 0, (n_analyze // batch_size + 1 if n_analyze else 0)


def dpo_order(pair_stages: Sequence[str], batch_size: int, cycles: int, seed: int) -> tuple[list[int], int]:
    """The DPO training order (indices into the pairs whose stage names are `pair_stages`, "recall" or
    "analyze") and the steps per cycle: each cycle is `dpo_cycle_steps` of recall pairs then of analyze pairs, each
    stage's pairs reshuffled whenever used up."""
    rng = random.Random(seed)
    recall = [i for i, s in enumerate(pair_stages) if s == "recall"]
    analyze = [i for i, s in enumerate(pair_stages) if s == "analyze"]
    r_steps, a_steps = dpo_cycle_steps(len(recall), len(analyze), batch_size)

    def stream(items):
        while True:
            order = items[:]
            rng.shuffle(order)
            yield from order

    streams = {"recall": stream(recall) if recall else None, "analyze": stream(analyze) if analyze else None}
    order: list[int] = []
    for _ in range(cycles):
        for stage, steps in (("recall", r_steps), ("analyze", a_steps)):
            for _ in range(steps * batch_size):
                order.append(next(streams[stage]))
    return order, r_steps + a_steps
