"""Log-probabilities at completion positions only, the shared-prefix scorer, the target-only training loss and
LoRA adapters: each against the plain full-width computation it replaces."""

import pytest
import torch

from tinythinker.students import StudentLoadError, apply_lora, load_student
from tinythinker.tiny import tiny_student

KINDS = ["seq2seq", "causal", "bert2bert"]
PROMPTS = [
    "Where would you put a plate after washing it?\n(A) cupboard (B) river (C) table\nSummarize:",
    "What do people eat?\n(A) food (B) rocks\nRecall: people eat food every day.\nSummarize:",
]
CHOICES = [["So the answer is option A.", "So the answer is option B.", "(C) table. So the answer is option C."],
           ["So the answer is option A.", "rocks. So the answer is option B."]]


def full_width_logprobs(student, prompts, completions):
    """The computation the fast path replaced: logits and log-softmax at every position."""
    feats = student.encode(prompts, completions)
    batch = student.collator()([{k: feats[k][i] for k in feats} for i in range(len(prompts))])
    labels = batch.pop("labels")
    model = student.model
    if student.kind == "seq2seq":
        dec = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=dec).logits
    else:
        logits = model(**batch).logits[:, :-1]
        labels = labels[:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


@pytest.fixture(scope="module", params=KINDS)
def student(request):
    return tiny_student(request.param)


def test_sequence_logprobs_equal_full_width(student):
    prompts = [p for p, cs in zip(PROMPTS, CHOICES, strict=True) for _ in cs]
    completions = [c for cs in CHOICES for c in cs]
    with torch.no_grad():
        fast = student.sequence_logprobs(prompts, completions)
        ref = full_width_logprobs(student, prompts, completions)
    assert torch.allclose(fast, ref, atol=1e-5), (fast, ref)


def test_score_candidates_equal_one_pass_per_candidate(student):
    scores = student.score_candidates(PROMPTS, CHOICES)
    assert [len(r) for r in scores] == [3, 2]
    for prompt, cs, row in zip(PROMPTS, CHOICES, scores, strict=True):
        lengths = [len(x) for x in student.target_ids(cs)]
        with torch.no_grad():
            ref = student.sequence_logprobs([prompt] * len(cs), cs)
        assert [round(s, 4) for s in row] == [round(v / n, 4) for v, n in zip(ref.tolist(), lengths, strict=True)]
    assert student.score_candidates([], []) == []


def test_target_only_loss_equals_model_loss():
    s = tiny_student("causal")
    feats = s.encode(PROMPTS, ["So the answer is option A.", "food. So the answer is option A."])
    batch = s.collator()([{k: feats[k][i] for k in feats} for i in range(2)])
    with torch.no_grad():
        ref = s.model(**batch).loss
        fast = s.token_loss(batch)
    assert torch.allclose(ref, fast, atol=1e-5), (ref, fast)


def test_lora_trains_only_the_adapter_saves_small_and_reloads(tmp_path):
    s = apply_lora(tiny_student("causal"), r=4)
    trainable = {n for n, p in s.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in s.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # a trained adapter: B starts at zero, which would make the test vacuous
        before = s.sequence_logprobs(PROMPTS, ["So the answer is option A."] * 2)
    s.base = str(tmp_path / "base")
    base = tiny_student("causal")
    base.save(tmp_path / "base")
    s.save(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    loaded = load_student(tmp_path / "adapter")
    assert loaded.is_lora and loaded.base == str(tmp_path / "base")
    with torch.no_grad():
        after = loaded.sequence_logprobs(PROMPTS, ["So the answer is option A."] * 2)
        merged = loaded.merge_adapter().sequence_logprobs(PROMPTS, ["So the answer is option A."] * 2)
    assert torch.allclose(before, after, atol=1e-5)
    assert torch.allclose(before, merged, atol=1e-4)
    assert not loaded.is_lora


def test_bert2bert_lora_trains_cross_attention_in_full():
    s = apply_lora(tiny_student("bert2bert"), r=4)
    trainable = [n for n, p in s.model.named_parameters() if p.requires_grad]
    assert any("crossattention" in n and "lora_" not in n for n in trainable)
    assert any("lora_" in n for n in trainable)


def test_lora_that_cannot_apply_names_the_student():
    with pytest.raises(StudentLoadError, match=r"cannot apply to student .*tiny"):
        apply_lora(tiny_student("causal"), r=4, targets="no_such_module")
    with pytest.raises(StudentLoadError, match="at least 1"):
        apply_lora(tiny_student("causal"), r=0)


def test_score_candidates_bands_rows_of_unlike_length(monkeypatch):
    """Inputs of very different lengths are scored in separate passes (less padding), with the same scores as
    each input scored alone."""
    from tinythinker import students as students_module

    s = tiny_student("causal")
    long_prompt = PROMPTS[0].replace("Summarize:", "Recall: " + "plates are kept dry and clean. " * 12 + "Summarize:")
    inputs = [PROMPTS[1], long_prompt, PROMPTS[1] + " "]
    choices = [CHOICES[1], CHOICES[0], CHOICES[1]]
    bands = []
    band = students_module.Student._score_band
    monkeypatch.setattr(students_module.Student, "_score_band",
                        lambda self, i, c: bands.append(len(i)) or band(self, i, c))
    together = s.score_candidates(inputs, choices)
    assert sorted(bands) == [1, 2]  # the long input alone, the two short ones together
    alone = [s.score_candidates([i], [c])[0] for i, c in zip(inputs, choices, strict=True)]
    assert [[round(x, 4) for x in r] for r in together] == [[round(x, 4) for x in r] for r in alone]


ANALYZE_GROUPS = [
    [f"Where would you put a plate after washing it?\n(A) cupboard (B) river (C) table\nRecall: plates go in "
     f"cupboards.\nAnalyze: For option {x}," for x in "ABC"],
    [f"What do people eat?\n(A) food (B) rocks\nRecall: food.\nAnalyze: For option {x}," for x in "AB"],
]


def test_generate_shared_equals_flat_generate(student):
    flat = [x for g in ANALYZE_GROUPS for x in g]
    expected = student.generate(flat, max_new_tokens=8)
    shared = student.generate_shared(ANALYZE_GROUPS, max_new_tokens=8)
    assert [x for g in shared for x in g] == expected
    assert [len(g) for g in shared] == [3, 2]
    sampled = student.generate_shared(ANALYZE_GROUPS, max_new_tokens=6, do_sample=True, temperature=1.5, seed=3)
    assert sampled == student.generate_shared(ANALYZE_GROUPS, max_new_tokens=6, do_sample=True, temperature=1.5,
                                              seed=3)
    assert student.generate_shared([]) == []


def test_generate_shared_really_shares_for_causal(monkeypatch):
    s = tiny_student("causal")
    expected = s.generate([x for g in ANALYZE_GROUPS for x in g], max_new_tokens=8)

    def no_flat_generate(*args, **kwargs):
        raise AssertionError("generate_shared fell back to flat generation")

    monkeypatch.setattr(s, "generate", no_flat_generate)
    assert [x for g in s.generate_shared(ANALYZE_GROUPS, max_new_tokens=8) for x in g] == expected


def _eos_prone_causal():
    """The tiny causal student with its EOS logit scaled up, so greedy rows end at different steps."""
    s = tiny_student("causal")
    with torch.no_grad():
        s.model.get_output_embeddings().weight[s.eos_id] *= 2.5
    return s


def test_greedy_shrinking_writes_what_generate_writes_and_drops_finished_rows():
    from tinythinker.students import RowsStreamer

    s = _eos_prone_causal()
    flat = [x for g in ANALYZE_GROUPS for x in g] + PROMPTS
    s.shrink_finished = False
    gen = s.generation_config(max_new_tokens=12)
    ref_ids = s.generate_ids(s.batch_inputs(flat), gen)
    ends = {r.index(s.eos_id) if s.eos_id in r else None for r in ref_ids}
    assert None in ends and len(ends) >= 4  # the check below means something: rows end at different steps
    ref, ref_shared = s.generate(flat, max_new_tokens=12), s.generate_shared(ANALYZE_GROUPS, max_new_tokens=12)

    s.shrink_finished = True
    rows_per_forward = []
    hook = s.model.register_forward_pre_hook(lambda m, a, kw: rows_per_forward.append(kw["input_ids"].shape[0]),
                                             with_kwargs=True)
    streamed = []
    try:
        assert s.generate(flat, max_new_tokens=12, streamer=RowsStreamer(s, streamed.append)) == ref
    finally:
        hook.remove()
    assert streamed[-1] == ref  # a streamer sees every row, the finished ones as padding
    assert rows_per_forward[0] == len(flat) and rows_per_forward[-1] < len(flat)
    assert sum(rows_per_forward) < len(flat) * len(rows_per_forward)
    assert s.generate_shared(ANALYZE_GROUPS, max_new_tokens=12) == ref_shared
    assert [x for g in ref_shared for x in g] == ref[:5]


# -- int8 inference ----------------------------------------------------------------------------------------------


def _int8_linears(model) -> int:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(isinstance(m, DynamicLinear) for m in model.modules())


@pytest.mark.parametrize("kind", KINDS)
def test_int8_quantizes_every_linear_and_stays_close_to_fp32(kind):
    fp32 = tiny_student(kind)
    linears = sum(isinstance(m, torch.nn.Linear) for m in fp32.model.modules())
    prompts = [p for p, cs in zip(PROMPTS, CHOICES, strict=True) for _ in cs]
    completions = [c for cs in CHOICES for c in cs]
    with torch.no_grad():
        ref = fp32.sequence_logprobs(prompts, completions)
    int8 = tiny_student(kind).quantize_int8()
    assert int8.quantized == "int8"
    assert _int8_linears(int8.model) == linears and not any(
        type(m) is torch.nn.Linear for m in int8.model.modules())
    with torch.no_grad():
        got = int8.sequence_logprobs(prompts, completions)
    assert not torch.equal(got, ref)  # really other weights
    # Each layer is within 3% of its fp32 self; end to end the tiny random seq2seq model amplifies that (its
    # log-probabilities are in the hundreds), so the whole-model bound is loose.
    layers = dict(int8.model.named_modules())
    torch.manual_seed(0)
    for name, layer in fp32.model.named_modules():
        if type(layer) is torch.nn.Linear:
            x = torch.randn(4, layer.in_features)
            with torch.no_grad():
                assert (layers[name](x) - layer(x)).norm() < 0.03 * layer(x).norm(), name
    assert torch.allclose(got, ref, rtol=0.25), (got, ref)
    scores = int8.score_candidates(PROMPTS, CHOICES)
    assert [len(r) for r in scores] == [3, 2]
    texts = int8.generate(PROMPTS, max_new_tokens=6)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert int8.quantize_int8() is int8  # twice is once


def test_int8_merges_lora_first_and_refuses_to_save_or_leave_the_cpu(tmp_path):
    student = apply_lora(tiny_student("causal"), r=4)
    student.quantize_int8()
    assert not student.is_lora and student.quantized == "int8"
    with pytest.raises(ValueError, match="int8 weights for inference"):
        student.save(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    elsewhere = tiny_student("causal")
    elsewhere.device = torch.device("cuda")  # only the check runs: it fails before touching the weights
    with pytest.raises(ValueError, match="quantizes for CPU inference.*cuda"):
        elsewhere.quantize_int8()
    assert elsewhere.quantized is None
