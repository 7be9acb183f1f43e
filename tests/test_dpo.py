import math

import pytest
import torch
import torch.nn.functional as F

from tinythinker.dpo import dpo_loss, rpo_loss, sequence_logps


def log_softmax_row(row):
    z = math.log(sum(math.exp(x) for x in row))
    return [x - z for x in row]


LOGITS = torch.tensor([
    [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [2.0, 0.0, 0.0]],
    [[0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]],
])
LABELS = torch.tensor([[0, 1, -100], [1, 2, 0]])


def test_sequence_logps_seq2seq_by_hand():
    logps, n = sequence_logps(LOGITS, LABELS, shift=False)
    want0 = log_softmax_row([1.0, 0.0, -1.0])[0] + log_softmax_row([0.5, 0.5, 0.0])[1]
    want1 = (log_softmax_row([0.0, 3.0, 0.0])[1] + log_softmax_row([0.0, 0.0, 1.0])[2]
             + log_softmax_row([1.0, 1.0, 1.0])[0])
    assert logps.tolist() == pytest.approx([want0, want1], abs=1e-6)
    assert n.tolist() == [2, 3]


def test_sequence_logps_causal_shifts_by_one():
    labels = torch.tensor([[-100, 0, 1], [-100, -100, 2]])
    logps, n = sequence_logps(LOGITS, labels, shift=True)
    # position t's logits predict token t+1
    want0 = log_softmax_row([1.0, 0.0, -1.0])[0] + log_softmax_row([0.5, 0.5, 0.0])[1]
    want1 = log_softmax_row([0.0, 0.0, 1.0])[2]
    assert logps.tolist() == pytest.approx([want0, want1], abs=1e-6)
    assert n.tolist() == [2, 1]


def test_dpo_and_rpo_loss_by_hand():
    pc, pr = torch.tensor([-2.0, -5.0]), torch.tensor([-3.0, -4.0])
    rc, rr = torch.tensor([-2.5, -5.0]), torch.tensor([-2.5, -4.5])
    beta, alpha = 0.5, 0.5
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    # pair 0: (-2 - -3) - (-2.5 - -2.5) = 1; pair 1: (-5 - -4) - (-5 - -4.5) = -0.5
    want = [-math.log(1 / (1 + math.exp(-beta * 1.0))), -math.log(1 / (1 + math.exp(-beta * -0.5)))]
    assert losses.tolist() == pytest.approx(want, abs=1e-6)
    assert cr.tolist() == pytest.approx([0.25, 0.0]) and rj.tolist() == pytest.approx([-0.25, 0.25])

    tokens = torch.tensor([4, 3])
    loss, metrics = rpo_loss(pc, pr, rc, rr, tokens, beta, alpha)
    nll = (2.0 + 5.0) / 7  # per token over the batch: summed NLL / chosen tokens
    assert loss.item() == pytest.approx(sum(want) / 2 + alpha * nll, abs=1e-6)
    assert metrics["nll_loss"] == pytest.approx(nll)
    assert metrics["rewards/margins"] == pytest.approx(((0.25 + 0.25) + (0.0 - 0.25)) / 2)
    assert metrics["rewards/accuracies"] == pytest.approx(0.5)
    assert metrics["dpo_loss"] == pytest.approx(sum(want) / 2)


def test_rpo_gradient_raises_chosen_and_lowers_rejected():
    pc = torch.tensor([-2.0], requires_grad=True)
    pr = torch.tensor([-2.0], requires_grad=True)
    loss, _ = rpo_loss(pc, pr, torch.tensor([-2.0]), torch.tensor([-2.0]), torch.tensor([2]), 0.5, 0.5)
    loss.backward()
    # d/dpc = -beta * sigmoid(0) - alpha / tokens; d/dpr = +beta * sigmoid(0)
    assert pc.grad.item() == pytest.approx(-0.25 - 0.25)
    assert pr.grad.item() == pytest.approx(0.25)


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_a_few_steps_raise_the_chosen_vs_rejected_margin(tmp_path, kind):
    from tinythinker.dpo import DPOConfig, build_trainer, pair_dataset
    from tinythinker.pairs import Pair
    from tinythinker.tiny import tiny_student

    student = tiny_student(kind, seed=0)
    pairs = [Pair(f"question {i}\nRecall:", "the water is cold", "a tree is hot fire", "recall", f"q{i}")
             for i in range(4)]
    dataset, kept = pair_dataset(student, pairs, 64, 32)
    assert kept == [0, 1, 2, 3] and len(dataset) == 4
    long = Pair("q\nRecall:", "word " * 40, "x", "recall", "q9")
    _, kept = pair_dataset(student, [*pairs, long], 64, 32)
    assert kept == [0, 1, 2, 3]  # a completion over 32 tokens is left out, never cut
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=4,
                     logging_steps=1, save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    trainer = build_trainer(student, dataset, args)

    def margin():
        student.model.eval()
        with torch.no_grad():
            lp = student.sequence_logprobs([p.prompt for p in pairs] * 2,
                                           [p.chosen for p in pairs] + [p.rejected for p in pairs])
        return (lp[:4] - lp[4:]).tolist()

    before = margin()
    ref = trainer.train_dataset
    # the precomputed reference is the starting policy: it scores pairs as Student.sequence_logprobs does
    ref_margins = [c - r for c, r in zip(ref["ref_chosen_logps"], ref["ref_rejected_logps"], strict=True)]
    assert ref_margins == pytest.approx(before, abs=1e-3)
    trainer.train()
    after = margin()
    assert sum(after) / 4 > sum(before) / 4 + 0.5
    logged = [h for h in trainer.state.log_history if "rewards/margins" in h]
    assert len(logged) == 4
    assert logged[-1]["rewards/margins"] > 0 and logged[-1]["rewards/accuracies"] == 1.0
    assert all(k in logged[0] for k in ("dpo_loss", "nll_loss", "loss"))


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_dpo_and_nll_on_completions_of_very_different_lengths_match_one_pair_at_a_time(tmp_path, kind):
    """The batched loss equals the same loss from unpadded single pairs: the NLL is over the real chosen tokens
    only (trl 0.9.6 and the paper's RDPOTrainer count a seq2seq batch's padding as token-0 targets), weighted as
    the paper's RDPOTrainer does (DPO + alpha x NLL)."""
    from tinythinker.dpo import SIDES, DPOConfig, PairCollator, build_trainer, pair_dataset, side_logps
    from tinythinker.pairs import Pair
    from tinythinker.tiny import tiny_student

    student = tiny_student(kind, seed=0)
    long_text = "the water is cold and the tree is by the river near the road where people walk"
    pairs = [Pair("question 0\nRecall:", "cold", long_text, "recall", "q0"),
             Pair("question 1 is a much longer question about where the house is\nRecall:", long_text, "hot",
                  "recall", "q1")]
    dataset, kept = pair_dataset(student, pairs, 64, 48)
    assert kept == [0, 1]
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, learning_rate=1e-3, max_steps=1,
                     save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, beta=0.5, rpo_alpha=0.5)
    trainer = build_trainer(student, dataset, args)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the policy off its reference, so that the DPO term is not log 2 for any batch
        for p in student.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    is_seq2seq = student.kind == "seq2seq"
    collate = PairCollator(student)
    batch = collate([trainer.train_dataset[i] for i in range(2)])
    assert (batch["chosen_labels"] == -100).any()  # the batch is padded
    loss, metrics = trainer.compute_loss(student.model, batch, return_outputs=True)

    single = []
    for i in range(2):
        one = collate([trainer.train_dataset[i]])
        assert not (one["chosen_labels"][:, -1] == -100).any()  # no padding at all
        single.append({side: side_logps(student.model, one, side, is_seq2seq) for side in SIDES}
                      | {"ref": (one["ref_chosen_logps"], one["ref_rejected_logps"])})
    chosen_logps = torch.cat([s["chosen"][0] for s in single])
    rejected_logps = torch.cat([s["rejected"][0] for s in single])
    tokens = torch.cat([s["chosen"][1] for s in single])
    ref_c = torch.cat([s["ref"][0] for s in single])
    ref_r = torch.cat([s["ref"][1] for s in single])
    dpo = -F.logsigmoid(0.5 * ((chosen_logps - rejected_logps) - (ref_c - ref_r))).mean().item()
    nll = (-chosen_logps.sum() / tokens.sum()).item()
    assert tokens.tolist()[0] < tokens.tolist()[1] / 5  # very different lengths
    assert metrics["dpo_loss"] == pytest.approx(dpo, abs=1e-5)
    assert abs(dpo - math.log(2)) > 1e-3
    assert metrics["nll_loss"] == pytest.approx(nll, abs=1e-5)
    assert loss.item() == pytest.approx(dpo + 0.5 * nll, abs=1e-5)
    if is_seq2seq:
        # What trl 0.9.6 computes instead: padding labels set to 0 and counted. This batch tells the two apart.
        labels = batch["chosen_labels"]
        logits = student.model(input_ids=batch["chosen_input_ids"], attention_mask=batch["chosen_attention_mask"],
                               labels=labels).logits
        padded = labels.masked_fill(labels == -100, 0)
        with_pads = -sequence_logps(logits, padded, shift=False)[0].sum().item() / padded.numel()
        assert abs(with_pads - nll) > 1e-2


def test_pair_dataset_counts_what_it_leaves_out(caplog):
    from tinythinker.dpo import pair_dataset, too_long
    from tinythinker.pairs import Pair
    from tinythinker.tiny import tiny_student

    student = tiny_student("causal", seed=0)
    pairs = [Pair("q\nRecall:", "word " * 40, "x", "recall", "q0"),
             Pair("q\nRecall:", "fine", "fire", "recall", "q1"),
             Pair("q\nRecall:", "y", "word " * 40, "recall", "q2"),
             Pair("q\nRecall:", "word " * 40, "word " * 41, "recall", "q3")]
    assert too_long(student, pairs, 32) == {"chosen": [0, 3], "rejected": [2, 3]}
    with caplog.at_level("WARNING", logger="tinythinker.dpo"):
        ds, kept = pair_dataset(student, pairs, 64, 32)
    assert kept == [1] and len(ds) == 1
    assert "left out 3 of 4 pairs with a completion over 32 tokens (chosen 2, rejected 2)" in caplog.text
    ds, kept = pair_dataset(student, pairs[:1], 64, 32)
    assert kept == [] and len(ds) == 0
    with pytest.raises(ValueError, match="leaves no room"):  # an encoding error is an error, not a dropped pair
        pair_dataset(student, pairs[1:2], 2, 32)


def test_gradient_accumulation_and_checkpointing_give_the_same_dpo_steps(tmp_path):
    """ReflectConfig's memory knobs: a step of 4 pairs as 2 micro-batches of 2, with activation checkpointing,
    moves the weights as the one batch of 4 does (DPO alone: its per-pair mean splits exactly)."""
    from tinythinker.dpo import DPOConfig, build_trainer, pair_dataset
    from tinythinker.pairs import Pair
    from tinythinker.tiny import tiny_student

    pairs = [Pair(f"question {i}\nRecall:", "the water is cold " * (1 + i % 2), "a tree is hot fire", "recall",
                  f"q{i}") for i in range(8)]

    def trained(accum, checkpointing):
        student = tiny_student("causal", seed=0)
        if checkpointing:
            student.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        dataset, _ = pair_dataset(student, pairs, 64, 32)
        args = DPOConfig(output_dir=str(tmp_path / f"{accum}{checkpointing}"), per_device_train_batch_size=4 // accum,
                         gradient_accumulation_steps=accum, learning_rate=1e-2, max_steps=2, rpo_alpha=0.0,
                         logging_steps=1, save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
        build_trainer(student, dataset, args).train()
        return torch.cat([p.detach().flatten() for p in student.model.parameters()])

    one_batch = trained(1, False)
    start = torch.cat([p.detach().flatten() for p in tiny_student("causal", seed=0).model.parameters()])
    assert (one_batch - start).abs().max() > 1e-3  # it trained
    assert torch.allclose(trained(2, True), one_batch, atol=1e-5)
