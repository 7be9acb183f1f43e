"""DPO with an added NLL term on the chosen completion (RPO), as a thin `transformers.Trainer` subclass.

The paper trains with TRL's DPOTrainer (scripts/dpo.py, scripts/utils/trainer.py: sigmoid loss, `beta=0.5`,
`rpo_alpha=0.5`, `precompute_ref_log_probs=True`). Current TRL supports causal models only, and the paper's
students are seq2seq, so the loss is written here for both kinds, on the tokenised features that
`Student.encode` makes (`labels` = the completion, -100 elsewhere).

Checked against trl 0.9.6's DPOTrainer and the paper's `RDPOTrainer` on identical tiny models and batches (T5,
bert2bert, Llama): the DPO term agrees to 1e-5 for all three, and so does the NLL term for causal students. For
seq2seq students it does not, on purpose: trl 0.9.6 and the paper's copy of it overwrite the padding labels of the
chosen side with token 0 before the NLL, so every pad position of a shorter chosen completion counts as a target
(token 0 is T5's pad). Here the NLL is over the real chosen tokens only, the intended loss. The weighting is the
paper's `RDPOTrainer`'s, `DPO + rpo_alpha x NLL`; stock trl 0.9.6 computes `rpo_alpha x DPO + NLL` (0.5 DPO + NLL
at the paper's rpo_alpha 0.5).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import Trainer, TrainingArguments

SIDES = ("chosen", "rejected")
log = logging.getLogger("tinythinker.dpo")


@dataclass
class DPOConfig(TrainingArguments):
    """TrainingArguments plus the DPO knobs (TRL's names and the paper's values)."""

    beta: float = field(default=0.5, metadata={"help": "DPO temperature (scripts/dpo.py default 0.5)."})
    rpo_alpha: float = field(default=0.5, metadata={"help": "weight of the chosen NLL term (RPO)."})
    max_prompt_length: int = field(default=256, metadata={"help": "tokens kept of a prompt."})
    max_completion_length: int = field(default=128, metadata={"help": "tokens kept of a completion."})
    # The order of the pairs is the schedule (recall then analyze batches); shuffling would undo it.
    train_sampling_strategy: str = "sequential"
    remove_unused_columns: bool = False
    report_to: str | list[str] = "none"


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the label tokens' log-probabilities per sequence, and the number of label tokens.

    `shift=True` for causal models, whose logits at position t predict token t+1."""
    if shift:
        logits, labels = logits[:, :-1, :], labels[:, 1:]
    mask = labels != -100
    safe = labels.masked_fill(~mask, 0)
    token_logps = torch.gather(logits.float().log_softmax(-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def dpo_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sigmoid DPO loss per pair and the implicit rewards beta * (log pi - log pi_ref) of both sides."""
    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    losses = -F.logsigmoid(beta * logits)
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


def rpo_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    chosen_tokens: torch.Tensor, beta: float, alpha: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """mean(DPO loss) + alpha x NLL of the chosen completions, and the metrics TRL logs.

    The weighting is the paper's RDPOTrainer's (DPO + alpha x NLL; stock trl 0.9.6 has alpha x DPO + NLL). The NLL
    is normalised per token over the whole batch, as `nn.CrossEntropyLoss(ignore_index=-100)` over the flattened
    chosen labels in trl 0.9.6 and the paper's code: total chosen-token NLL divided by the number of chosen tokens
    in the batch, not averaged per sequence. `chosen_tokens` counts the real tokens only; trl 0.9.6 and the paper
    also count a seq2seq batch's padding (their labels hold 0 there), which this loss deliberately does not."""
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    nll = -policy_chosen.sum() / chosen_tokens.sum().clamp(min=1)
    loss = losses.mean() + alpha * nll
    metrics = {
        "dpo_loss": losses.mean().item(),
        "nll_loss": nll.item(),
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
    }
    return loss, metrics


def tokenize_pairs(student, prompts: list[str], chosen: list[str], rejected: list[str],
                   max_prompt_length: int, max_completion_length: int) -> Dataset:
    """`chosen_input_ids`, `chosen_attention_mask`, `chosen_labels` and the same for `rejected`."""
    columns: dict[str, list] = {}
    for side, completions in zip(SIDES, (chosen, rejected), strict=True):
        enc = student.encode(prompts, completions, max_prompt_length, max_completion_length)
        for key in ("input_ids", "attention_mask", "labels"):
            columns[f"{side}_{key}"] = enc[key]
    return Dataset.from_dict(columns)


class PairCollator:
    """Pads each side with the student's own collator; passes precomputed reference log-probs through."""

    def __init__(self, student):
        self.pad = student.collator()

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for side in SIDES:
            padded = self.pad([{k: f[f"{side}_{k}"] for k in ("input_ids", "attention_mask", "labels")}
                               for f in features])
            for key, value in padded.items():
                batch[f"{side}_{key}"] = torch.as_tensor(value)
        for side in SIDES:
            key = f"ref_{side}_logps"
            if key in features[0]:
                batch[key] = torch.tensor([f[key] for f in features], dtype=torch.float32)
        return batch


def side_logps(model, batch: dict[str, torch.Tensor], side: str, is_seq2seq: bool):
    kwargs = {"input_ids": batch[f"{side}_input_ids"], "attention_mask": batch[f"{side}_attention_mask"]}
    labels = batch[f"{side}_labels"]
    if is_seq2seq:
        # The model builds its decoder inputs from the labels (shift right), as in SFT.
        kwargs["labels"] = labels
    else:
        kwargs["use_cache"] = False
    logits = model(**kwargs).logits
    return sequence_logps(logits, labels, shift=not is_seq2seq)


def disable_dropout(model: torch.nn.Module) -> None:
    # TRL's default (`disable_dropout=True`): the policy and the precomputed reference then score a
    # completion the same way, so the log-ratios start at exactly zero.
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


@torch.no_grad()
def precompute_reference(model, dataset: Dataset, collator: PairCollator, batch_size: int,
                         is_seq2seq: bool, on_batch=None) -> Dataset:
    """Reference log-probs once per iteration: the reference IS the starting policy (the previous
    iteration's best checkpoint), so it is scored before training and never held as a second model.
    Padding is on the right under the attention mask, so a pair scores the same in any batch."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = {side: [] for side in SIDES}
    for start in range(0, len(dataset), batch_size):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        batch = {k: v.to(device) for k, v in batch.items()}
        for side in SIDES:
            out[side].extend(side_logps(model, batch, side, is_seq2seq)[0].tolist())
        if on_batch:
            on_batch(min(start + batch_size, len(dataset)), len(dataset))
    model.train(was_training)
    for side in SIDES:
        dataset = dataset.add_column(f"ref_{side}_logps", out[side])
    return dataset


class DPOTrainer(Trainer):
    """`Trainer` whose loss is DPO(sigmoid) + alpha x chosen NLL against precomputed reference log-probs."""

    # compute_loss returns a per-batch mean; the Trainer divides it for gradient accumulation.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, is_seq2seq: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_seq2seq = is_seq2seq
        self._stored: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "ref_chosen_logps" not in inputs:
            raise ValueError("DPOTrainer needs reference log-probs: run precompute_reference on the dataset first")
        chosen, chosen_tokens = side_logps(model, inputs, "chosen", self.is_seq2seq)
        rejected, _ = side_logps(model, inputs, "rejected", self.is_seq2seq)
        loss, metrics = rpo_loss(chosen, rejected, inputs["ref_chosen_logps"], inputs["ref_rejected_logps"],
                                 chosen_tokens, self.args.beta, self.args.rpo_alpha)
        for key, value in metrics.items():
            self._stored[key].append(value)
        return (loss, metrics) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # As TRL does: the metrics of the steps since the last log, averaged, ride along with the loss.
        if "loss" in logs:
            for key, values in self._stored.items():
                logs[key] = sum(values) / len(values)
            self._stored.clear()
        super().log(logs, start_time)


def too_long(student, pairs, max_completion_length: int) -> dict[str, list[int]]:
    """Indices of the pairs whose chosen / rejected completion has more than `max_completion_length` tokens
    (counted as `Student.encode` counts a target: with its end-of-sequence token)."""
    n = len(pairs)
    lengths = [len(ids) for ids in student.target_ids([p.chosen for p in pairs] + [p.rejected for p in pairs])]
    return {side: [i for i in range(n) if lengths[k * n + i] > max_completion_length]
            for k, side in enumerate(SIDES)}


def pair_dataset(student, pairs, max_prompt_length: int, max_completion_length: int) -> tuple[Dataset, list[int]]:
    """Tokenised pairs and the indices of the pairs kept: a pair with a completion longer than
    `max_completion_length` tokens is left out and counted in the log (`Student.encode` never cuts a target; a
    cut completion would be scored on text the model never wrote). A prompt over `max_prompt_length` is cut in
    the middle as every stage input is; any other encoding error is raised."""
    over = too_long(student, pairs, max_completion_length) if pairs else {side: [] for side in SIDES}
    dropped = set(over["chosen"]) | set(over["rejected"])
    keep = [i for i in range(len(pairs)) if i not in dropped]
    if dropped:
        log.warning("left out %d of %d pairs with a completion over %d tokens (chosen %d, rejected %d)",
                    len(dropped), len(pairs), max_completion_length, len(over["chosen"]), len(over["rejected"]))
    if not keep:
        return Dataset.from_dict({f"{side}_{key}": [] for side in SIDES
                                  for key in ("input_ids", "attention_mask", "labels")}), keep
    ds = tokenize_pairs(student, [pairs[i].prompt for i in keep], [pairs[i].chosen for i in keep],
                        [pairs[i].rejected for i in keep], max_prompt_length, max_completion_length)
    return ds, keep


def build_trainer(student, dataset: Dataset, args: DPOConfig, order: list[int] | None = None, callbacks=None,
                  on_reference=None) -> DPOTrainer:
    """A DPOTrainer over `dataset` (tokenised pairs) visited in `order` (indices, repeats allowed; default
    each pair once), with the reference log-probs of the student as it is now precomputed, once per pair."""
    is_seq2seq = student.kind == "seq2seq"
    disable_dropout(student.model)
    collator = PairCollator(student)
    dataset = precompute_reference(student.model, dataset, collator, args.per_device_train_batch_size,
                                   is_seq2seq, on_reference)
    if order is not None:
        dataset = dataset.select(order)
    return DPOTrainer(model=student.model, args=args, train_dataset=dataset, data_collator=collator,
                      callbacks=callbacks or [], is_seq2seq=is_seq2seq)
