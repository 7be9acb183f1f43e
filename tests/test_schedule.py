"""The interval schedule: exact stage order, per-stage batches, epoch reshuffles, distributed sharding."""

from collections import Counter

import pytest
from accelerate.data_loader import BatchSamplerShard

from tinythinker.schedule import StageBatchSampler, cycle_steps, interval_order

STAGES = ("recall", "analyze", "summarize")


def test_interval_order_exact_small_case():
    # interval 1, 2 options: R, A, A, S per cycle; summarize runs out after 2 visits, analyze after 5 steps.
    order = interval_order({"recall": 3, "analyze": 5, "summarize": 2}, STAGES, interval=1, n_options=2)
    R, A, S = "recall", "analyze", "summarize"
    assert order == [R, A, A, S, R, A, A, S, R, A]


def test_interval_order_interval_two():
    order = interval_order({"recall": 4, "analyze": 9, "summarize": 4}, STAGES, interval=2, n_options=3)
    assert order == ["recall"] * 2 + ["analyze"] * 6 + ["summarize"] * 2 + ["recall"] * 2 + ["analyze"] * 3 + [
        "summarize"] * 2
    assert cycle_steps(STAGES, 2, 3) == 10
    assert cycle_steps(("summarize",), 20, 5) == 20


def test_equal_order_gives_every_stage_interval_steps_per_visit():
    R, A, S = "recall", "analyze", "summarize"
    order = interval_order({R: 4, A: 9, S: 4}, STAGES, interval=2, n_options=3, order="equal")
    assert order == [R, R, A, A, S, S, R, R, A, A, S, S, A, A, A, A, A]
    assert cycle_steps(STAGES, 2, 3, "equal") == 6
    s = StageBatchSampler({R: 8, A: 18, S: 8}, STAGES, batch_size=2, interval=2, n_options=3, order="equal")
    assert [_stage_of(s, b) for b in s] == order


def _stage_of(sampler, batch):
    stages = {sampler.stage_of_index(i) for i in batch}
    assert len(stages) == 1, f"batch mixes stages {stages}"
    return stages.pop()


def test_sampler_batches_follow_schedule_and_cover_every_example():
    sizes = {"recall": 6, "analyze": 10, "summarize": 4}
    s = StageBatchSampler(sizes, STAGES, batch_size=2, interval=1, n_options=2, seed=3)
    batches = list(s)
    assert len(batches) == len(s) == 3 + 5 + 2
    assert [_stage_of(s, b) for b in batches] == s.step_stages() == interval_order(
        {"recall": 3, "analyze": 5, "summarize": 2}, STAGES, 1, 2)
    seen = Counter(i for b in batches for i in b)
    assert sorted(seen) == list(range(20)) and set(seen.values()) == {1}


def test_sampler_reshuffles_per_epoch_and_is_reproducible():
    sizes = {"recall": 8, "summarize": 8}
    a = StageBatchSampler(sizes, ("recall", "summarize"), batch_size=4, interval=1, n_options=5, seed=0)
    b = StageBatchSampler(sizes, ("recall", "summarize"), batch_size=4, interval=1, n_options=5, seed=0)
    first = list(a)
    assert first == list(b)
    a.set_epoch(1)
    second = list(a)
    assert second != first
    assert [_stage_of(a, x) for x in second] == [_stage_of(a, x) for x in first]


def test_last_partial_step_is_topped_up_from_the_same_stage():
    s = StageBatchSampler({"recall": 5, "summarize": 3}, ("recall", "summarize"), batch_size=4, interval=1,
                          n_options=5, seed=0)
    batches = list(s)
    assert all(len(b) == 4 for b in batches)
    assert [_stage_of(s, b) for b in batches] == ["recall", "summarize", "recall"]


def test_distributed_shards_train_the_same_stage_at_every_step():
    sizes = {"recall": 12, "analyze": 30, "summarize": 12}
    s = StageBatchSampler(sizes, STAGES, batch_size=2, interval=1, n_options=3, seed=0, world_size=2,
                          grad_accum=2)
    shards = [list(BatchSamplerShard(s, num_processes=2, process_index=p)) for p in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(s) // 2
    for k in range(len(shards[0])):
        stage0, stage1 = _stage_of(s, shards[0][k]), _stage_of(s, shards[1][k])
        assert stage0 == stage1
        assert stage0 == s.step_stages()[k // 2]  # 2 micro-batches (grad_accum) per optimizer step
    used = Counter(i for sh in shards for b in sh for i in b)
    assert set(used) == set(range(54))


def test_mixed_order_mixes_stages():
    s = StageBatchSampler({"recall": 20, "summarize": 20}, ("recall", "summarize"), batch_size=10, interval=1,
                          n_options=5, seed=0, order="mixed")
    batches = list(s)
    assert len(batches) == 4 and s.step_stages() == ["mixed"] * 4
    assert any(len({s.stage_of_index(i) for i in b}) == 2 for b in batches)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown order"):
        StageBatchSampler({"recall": 1}, ("recall",), batch_size=1, interval=1, n_options=2, order="random")
    with pytest.raises(ValueError, match="no training examples for stage"):
        StageBatchSampler({"recall": 0}, ("recall",), batch_size=1, interval=1, n_options=2)
    with pytest.raises(ValueError, match="interval"):
        interval_order({"recall": 1}, ("recall",), 0, 2)


def test_dpo_cycle_steps_are_the_papers():
    from tinythinker.schedule import dpo_cycle_steps

    # scripts/dpo.py: recall_interval = n_recall // batch + 1; analyze_interval = (n_analyze // n_recall + 1) x that
    assert dpo_cycle_steps(40, 100, 8) == (6, 18)
    assert dpo_cycle_steps(0, 100, 8) == (0, 13)
    assert dpo_cycle_steps(5, 0, 8) == (1, 0)
    assert dpo_cycle_steps(0, 0, 8) == (0, 0)


def test_dpo_order_takes_stage_names_and_reshuffles_each_stage_when_used_up():
    from tinythinker.schedule import dpo_order

    names = ["analyze", "recall"] * 3 + ["analyze"] * 4  # 3 recall, 7 analyze pairs
    order, cycle = dpo_order(names, batch_size=2, cycles=3, seed=1)
    assert cycle == 2 + 6  # recall 3 // 2 + 1 = 2 steps, analyze (7 // 3 + 1) x 2 = 6 steps
    assert len(order) == 3 * cycle * 2
    per_cycle = [order[c * 16:(c + 1) * 16] for c in range(3)]
    for block in per_cycle:
        assert [names[i] for i in block] == ["recall"] * 4 + ["analyze"] * 12
    recall_stream = [i for i in order if names[i] == "recall"]
    for k in range(0, 9, 3):  # every recall pair once before any twice
        assert sorted(recall_stream[k:k + 3]) == [1, 3, 5]
    assert dpo_order(names, 2, 3, seed=1) == (order, cycle)


def test_length_grouping_keeps_the_schedule_and_each_segments_examples_and_cuts_padding():
    import random

    sizes = {"recall": 16, "analyze": 40, "summarize": 16}
    lengths = [random.Random(i).randint(5, 300) for i in range(72)]
    plain = StageBatchSampler(sizes, STAGES, batch_size=4, interval=2, n_options=2, seed=1)
    grouped = StageBatchSampler(sizes, STAGES, batch_size=4, interval=2, n_options=2, seed=1, lengths=lengths)
    a, b = list(plain), list(grouped)
    assert [_stage_of(plain, x) for x in a] == [_stage_of(grouped, x) for x in b] == plain.step_stages()
    # Each run of one stage trains on the same examples, only regrouped.
    stages, start = plain.step_stages(), 0
    while start < len(stages):
        end = start
        while end < len(stages) and stages[end] == stages[start]:
            end += 1
        assert sorted(i for x in a[start:end] for i in x) == sorted(i for x in b[start:end] for i in x)
        start = end

    def padding(batches):
        return sum(max(lengths[i] for i in x) * len(x) - sum(lengths[i] for i in x) for x in batches)

    assert padding(b) < padding(a) / 2
    assert list(grouped) == b  # reproducible
    with pytest.raises(ValueError, match="lengths has 3 entries"):
        StageBatchSampler(sizes, STAGES, batch_size=4, interval=2, n_options=2, lengths=[1, 2, 3])
