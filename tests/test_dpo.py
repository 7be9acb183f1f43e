import math

import pytest
import torch

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
