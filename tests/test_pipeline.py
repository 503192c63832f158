"""ssb run end to end on a tiny random model: scripted phase 1, real teacher/distill/eval/report."""

import hashlib
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers import SETTINGS, write_benchmark, write_questions
from scripted import ScriptedBackend, refine_script, rollout_script
from ssb.chat import ChatFormat
from ssb.config import load_config
from ssb.models import load_tokenizer
from ssb.run import run_all
from ssb.runfolder.artifacts import RunFolderError, read_jsonl
from tiny import greedy_reference, recorded


def script(user, s):
    return refine_script(user, s) if user.startswith("We have two sample responses") else rollout_script(user, s)


def make(tmp_path, tiny_model_dir, **overrides):
    write_benchmark(tmp_path / "bench", "gsm8k", 5)
    data = write_questions(tmp_path / "questions.jsonl", 16)
    return load_config(None, {"run_dir": str(tmp_path / "run"), "data.source": "jsonl", "data.path": str(data),
                              "data.data_dir": str(tmp_path / "bench"), "model.name_or_path": str(tiny_model_dir), **SETTINGS, **overrides})


def evaluated_completions(run: Path, model: str) -> list[dict]:
    return [recorded(r["completions"][0]) for r in sorted(read_jsonl(run / f"eval/{model}/gsm8k.samples.jsonl"), key=lambda r: r["index"])]


def reference_completions(config, adapter: Path | None) -> list[dict]:
    """A plain greedy loop over the base model, or over the base with ``adapter``, on the benchmark's questions."""
    from peft import PeftModel

    from ssb.models import load_model
    from ssb.prompts import load_prompts

    model = load_model(config.model)
    model = (model if adapter is None else PeftModel.from_pretrained(model, adapter)).eval()
    tokenizer = load_tokenizer(config.model)
    conversations = [[{"role": "system", "content": load_prompts().system}, {"role": "user", "content": f"Q{i}: what is {i}?"}]
                     for i in range(config.eval.limit)]
    return [recorded(greedy_reference(model, tokenizer, c, config.eval.sampling.max_new_tokens)) for c in conversations]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ssb_run_whole_method_then_skip_refuse_and_force(tmp_path, tiny_model_dir):
    config = make(tmp_path, tiny_model_dir)
    chat = ChatFormat(load_tokenizer(config.model))
    backend = ScriptedBackend(chat, script)
    base_weights = file_sha256(Path(tiny_model_dir) / "model.safetensors")
    result = run_all(config, backend=backend)
    run = Path(config.run_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    assert {"rollouts", "refine", "teacher", "distill", "eval/base/gsm8k", "eval/ssb/gsm8k"} <= set(manifest["stages"])
    assert set(result["pass@1"]) == {"base", "ssb"}
    report = (run / "report.md").read_text()
    assert "| base |" in report and "| ssb |" in report and (run / "training.png").exists()

    # Distillation trained the adapter (every B left PEFT's zero init) and left the base weights alone...
    adapter_file = run / "distill/adapter/adapter_model.safetensors"
    lora_b = [v for k, v in load_file(adapter_file).items() if "lora_B" in k]
    assert len(lora_b) == 14 and all(v.abs().sum() > 0 for v in lora_b)
    assert file_sha256(Path(tiny_model_dir) / "model.safetensors") == base_weights
    # ...and "ssb" was evaluated with that adapter: its completions are the adapted model's, not the base's.
    evaluated = manifest["stages"]["eval/ssb/gsm8k"]["inputs"]["model"]
    assert evaluated["adapter"] == str(run / "distill" / "adapter") and evaluated["adapter_sha256"] == file_sha256(adapter_file)[:16]
    assert manifest["stages"]["eval/base/gsm8k"]["inputs"]["model"]["adapter"] is None
    assert evaluated_completions(run, "base") == reference_completions(config, None)
    assert evaluated_completions(run, "ssb") == reference_completions(config, run / "distill" / "adapter")
    assert evaluated_completions(run, "ssb") != evaluated_completions(run, "base")

    # Everything finished: a second run generates nothing and trains nothing.
    calls = len(backend.calls)
    again = run_all(config, backend=backend)
    assert len(backend.calls) == calls and again["pass@1"] == result["pass@1"]
    assert file_sha256(adapter_file)[:16] == evaluated["adapter_sha256"]

    changed = make(tmp_path, tiny_model_dir, **{"distill.lr": 5e-3})
    with pytest.raises(RunFolderError, match=r"stage 'distill'[\s\S]*distill\.lr: 0\.01 -> 0\.005"):
        run_all(changed, backend=backend)
    # Forcing distill retrains; the new adapter changes eval's inputs, which must then be forced too.
    with pytest.raises(RunFolderError, match="eval/ssb/gsm8k"):
        run_all(changed, force=["distill"], backend=backend)
    assert file_sha256(adapter_file)[:16] != evaluated["adapter_sha256"]
    run_all(changed, force=["eval"], backend=backend)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["distill"]["inputs"]["distill"]["lr"] == 5e-3
    assert manifest["stages"]["eval/ssb/gsm8k"]["inputs"]["model"]["adapter_sha256"] == file_sha256(adapter_file)[:16]
    assert evaluated_completions(run, "ssb") == reference_completions(changed, run / "distill" / "adapter")
    with pytest.raises(ValueError, match="unknown stage"):
        run_all(changed, force=["nope"], backend=backend)


DISK_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_pipeline import make, script
from scripted import ScriptedBackend
from ssb.chat import ChatFormat
from ssb.models import load_tokenizer
from ssb.run import run_all
config = make(Path({tmp!r}), Path({model!r}))
run_all(config, backend=ScriptedBackend(ChatFormat(load_tokenizer(config.model)), script))
"""


def test_outputs_go_only_to_the_run_folder_and_the_cache(tmp_path, tiny_model_dir):
    import os
    import subprocess
    import sys

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {**os.environ, "HOME": str(home), "SSB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("MPLCONFIGDIR", None)
    env.pop("HF_HOME", None)
    script = DISK_SCRIPT.format(tests=str(Path(__file__).parent), tmp=str(work), model=str(tiny_model_dir))
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=work, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written_to_home = [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()]
    assert written_to_home == []
    outside = {p.relative_to(work).parts[0] for p in work.rglob("*") if p.is_file()}
    assert outside == {"run", "bench", "questions.jsonl"}  # the run folder and the test's own inputs
    assert (work / "run" / "report.md").exists()
