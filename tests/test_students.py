import time

import pytest
import torch

from tinythinker.students import StudentLoadError, load_student
from tinythinker.tiny import tiny_student

KINDS = ["seq2seq", "causal", "bert2bert"]
INPUTS = [
    "Where would you put a plate after washing it?\n(A) cupboard (B) river (C) table\nRecall:",
    "What do people eat?\n(A) food (B) rocks\nAnalyze: For option B,",
    "Why is snow cold?\n(A) sun (B) ice (C) heat (D) fire\nRecall: Snow is frozen water.\nSummarize:",
]


def test_tests_run_one_torch_thread():
    # conftest.py sets OMP_NUM_THREADS=1 before torch loads (two shared cores: a second thread only spins).
    assert torch.get_num_threads() == 1


@pytest.fixture(scope="module", params=KINDS)
def student(request):
    return tiny_student(request.param)


def test_tiny_student_is_deterministic_and_local():
    start = time.perf_counter()
    a, b, c = tiny_student("causal", seed=0), tiny_student("causal", seed=0), tiny_student("causal", seed=1)
    assert time.perf_counter() - start < 3
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    with pytest.raises(ValueError, match="unknown tiny student kind"):
        tiny_student("rnn")


def test_tiny_tokenizer_round_trips_stage_text(student):
    tok = student.tokenizer
    for text in ["So the answer is option A.", "(B) oven. So the answer is option B.", "Recall: it's 42% wet!"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids).replace(" ", "") == text.replace(" ", "")
    assert tok.decode(tok("So the answer is option A.")["input_ids"], skip_special_tokens=True) == \
        "So the answer is option A."


def test_generate_shapes_and_batching(student):
    out = student.generate(INPUTS, max_new_tokens=6)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert len(set(out)) > 1, "a tiny student that ignores its input makes every other test vacuous"
    assert out == [student.generate([x], max_new_tokens=6)[0] for x in INPUTS]
    sampled = student.generate(INPUTS, max_new_tokens=4, do_sample=True, temperature=2.0,
                               num_return_sequences=2, seed=1)
    assert len(sampled) == 6
    assert sampled == student.generate(INPUTS, max_new_tokens=4, do_sample=True, temperature=2.0,
                                       num_return_sequences=2, seed=1)
    assert student.generate([]) == []


def test_causal_encode_masks_the_prompt():
    s = tiny_student("causal")
    enc = s.encode(INPUTS[:2], ["cupboard holds plates", "rocks are not food"], 256, 32)
    for ids, labels, mask, target in zip(enc["input_ids"], enc["labels"], enc["attention_mask"],
                                         ["cupboard holds plates", "rocks are not food"], strict=True):
        target_ids = s.target_ids([target])[0]
        n_prompt = len(ids) - len(target_ids)
        assert labels[:n_prompt] == [-100] * n_prompt
        assert labels[n_prompt:] == target_ids == ids[n_prompt:]
        assert target_ids[-1] == s.tokenizer.eos_token_id
        assert len(mask) == len(ids)
    batch = s.collator()([{k: enc[k][i] for k in enc} for i in range(2)])
    assert batch["input_ids"].shape == batch["labels"].shape
    short = int(batch["attention_mask"].sum(1).argmin())
    assert (batch["labels"][short][batch["attention_mask"][short] == 0] == -100).all()


@pytest.mark.parametrize("kind", KINDS)
def test_truncation_cuts_the_input_middle_never_the_target(kind):
    s = tiny_student(kind)
    long_input = "Where is it?\n(A) here (B) there\nRecall: " + "very " * 400 + "long.\nSummarize:"
    target = "So the answer is option B."
    enc = s.encode([long_input], [target], 64, 16)
    target_ids = s.target_ids([target])[0]
    labels = enc["labels"][0]
    assert labels[-len(target_ids):] == target_ids  # the whole target, EOS included
    source = enc["input_ids"][0] if kind != "causal" else enc["input_ids"][0][:-len(target_ids)]
    assert len(source) == 64
    text = s.tokenizer.decode(source, skip_special_tokens=True).replace(" ", "")
    assert text.startswith("Whereisit?(A)here") and text.endswith("verylong.Summarize:")
    with pytest.raises(ValueError, match="never truncated"):
        s.encode([long_input], [target + " and more" * 20], 64, 16)


@pytest.mark.filterwarnings("ignore:Version v4.12.0:FutureWarning")
def test_sequence_logprobs_match_the_model_loss(student):
    prompts, completions = INPUTS[:2], ["a cupboard", "So the answer is option A."]
    logp = student.sequence_logprobs(prompts, completions)
    assert logp.shape == (2,)
    for i in range(2):
        enc = student.encode([prompts[i]], [completions[i]])
        labels = torch.tensor(enc["labels"])
        kwargs = {"input_ids": torch.tensor(enc["input_ids"]), "labels": labels}
        with torch.no_grad():
            loss = student.model(**kwargs).loss
        n = len(student.target_ids([completions[i]])[0])
        assert logp[i].item() == pytest.approx(-float(loss) * n, rel=1e-4)
    student.model.train()
    try:
        student.sequence_logprobs(prompts, completions).sum().backward()
        assert any(p.grad is not None for p in student.model.parameters())
    finally:
        student.model.zero_grad(set_to_none=True)
        student.model.eval()


def test_generate_choice_writes_only_a_choice(student):
    choices = [["So the answer is option A.", "So the answer is option B.", "(A) cupboard. So the answer is option A."],
               ["So the answer is option A.", "So the answer is option B."],
               ["So the answer is option C."]]
    picks = student.generate_choice(INPUTS, choices)
    assert len(picks) == 3 and all(0 <= p < len(c) for p, c in zip(picks, choices, strict=True))
    assert picks[2] == 0
    assert picks == [student.generate_choice([x], [c])[0] for x, c in zip(INPUTS, choices, strict=True)]
    sampled = student.generate_choice(INPUTS, choices, do_sample=True, temperature=3.0, seed=0)
    assert all(0 <= p < len(c) for p, c in zip(sampled, choices, strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip(kind, tmp_path):
    s = tiny_student(kind)
    before = s.generate(INPUTS, max_new_tokens=8)
    s.save(tmp_path / "student")
    again = load_student(tmp_path / "student")
    assert (again.kind, again.arch) == (s.kind, s.arch)
    assert again.generate(INPUTS, max_new_tokens=8) == before
    # A run folder stands for its best checkpoint.
    s.save(tmp_path / "run" / "best")
    assert load_student(tmp_path / "run").generate(INPUTS[:1], max_new_tokens=8) == before[:1]


def test_load_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StudentLoadError) as e:
        load_student("tinythinker-tests/no-such-model")
    msg = str(e.value)
    assert "tinythinker-tests/no-such-model" in msg and "hub" in msg and "minilm-bert2bert" in msg
    with pytest.raises(StudentLoadError, match="not a model folder"):
        load_student(tmp_path)
    with pytest.raises(StudentLoadError, match="no such student folder"):
        load_student(str(tmp_path / "missing"))
    with pytest.raises(StudentLoadError, match="unknown student kind"):
        load_student("minilm-bert2bert", kind="rnn")


def test_minilm_bert2bert_loads_offline():
    s = load_student("minilm-bert2bert", device="cpu")
    tok = s.tokenizer
    assert (s.kind, s.arch) == ("seq2seq", "bert2bert")
    cfg = s.model.config
    assert (cfg.decoder_start_token_id, cfg.eos_token_id, cfg.pad_token_id) == \
        (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
    assert cfg.vocab_size == len(tok) and s.max_source_length == 512
    out = s.generate(INPUTS[:2], max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(t, str) and t for t in out)


@pytest.mark.slow
def test_smollm2_loads_offline_from_gguf():
    s = load_student("smollm2-135m", device="cpu")
    assert s.kind == "causal" and s.model.dtype == torch.float32
    assert s.tokenizer.eos_token == "<|im_end|>"
    out = s.generate(INPUTS[:2], max_new_tokens=2)
    assert len(out) == 2
    # Dequantized to dense fp32 on load, so the Trainer (phase 1 and phase 2) may fine-tune it.
    from transformers.trainer_utils import validate_quantization_for_training

    validate_quantization_for_training(s.model)


def test_run_folder_without_best_names_what_to_pass(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text('{"command": "train", "student": "tiny"}')
    with pytest.raises(StudentLoadError, match=r"run folder without a best/ checkpoint.*checkpoint-N"):
        load_student(run)
