"""ssb eval and ssb report: scripted backends for known accuracies, the real HF backend on a tiny model."""

import json
import re

import pytest

from helpers import write_benchmark
from scripted import ScriptedBackend
from ssb.chat import ChatFormat
from ssb.cli import main
from ssb.config import load_config
from ssb.evaluation import run_eval
from ssb.report import write_report
from ssb.runfolder.artifacts import read_jsonl
from ssb.stats.metrics import wilson_interval


def answer_script(right_every: int):
    """Sample s of question i is right when (i + s) % right_every == 0; others answer i + 1 (or nothing)."""
    def respond(user, s):
        i = int(re.match(r"Q(\d+)", user).group(1))
        if (i + s) % right_every == 0:
            return f"so \\boxed{{{i}.0}}"
        return ("rambling", "length") if s == 3 else f"so \\boxed{{{i + 1}}}"
    return respond


def config_for(tmp_path, **overrides):
    data = tmp_path / "data"
    write_benchmark(data, "gsm8k", 20)
    return load_config(None, {"run_dir": str(tmp_path / "eval-run"), "data.data_dir": str(data), "eval.benchmarks": ["gsm8k"],
                              "eval.chunk_questions": 6, "progress": False, **overrides})


def test_known_accuracies_with_a_scripted_backend(tmp_path, tokenizer):
    config = config_for(tmp_path, **{"eval.n": 4, "eval.k": [1, 2, 4], "eval.adapters": ["good=/adapters/good"]})
    scripts = {"base": answer_script(4), "good": answer_script(1)}
    results = run_eval(config, backend_factory=lambda name, path: ScriptedBackend(ChatFormat(tokenizer), scripts[name]))
    assert results == {"base": {"gsm8k": pytest.approx(0.25)}, "good": {"gsm8k": pytest.approx(1.0)}}
    base = json.loads((tmp_path / "eval-run/eval/base/gsm8k.summary.json").read_text())
    # Each question has exactly one right sample among 4: pass@k = k/4, maj@4 = 0 (wrong answers agree 2 or 3 to 1)
    assert base["pass@k"] == pytest.approx({"1": 0.25, "2": 0.5, "4": 1.0})
    assert base["maj@k"] == pytest.approx({"1": 0.25, "2": 0.25, "4": 0.0})  # maj@2: right/wrong ties count half
    assert base["strict_pass@1"]["mean"] == 0.0  # "i.0" is right but not the same string as "i"
    assert base["truncated_rate"] == pytest.approx(15 / 80)  # sample 3 truncated unless it is the right one
    samples = read_jsonl(tmp_path / "eval-run/eval/base/gsm8k.samples.jsonl")
    assert len(samples) == 20 and {"id", "prompt", "gold", "completions", "grader"} <= set(samples[0])
    assert set(samples[0]["completions"][0]) == {"text", "finish_reason", "num_tokens", "answer", "correct", "strict_correct", "grader_timed_out"}
    assert samples[0]["prompt"][1]["content"] == "Q0: what is 0?"


def test_greedy_n1_ci_and_resume_without_duplicates(tmp_path, tokenizer):
    config = config_for(tmp_path)
    backend = ScriptedBackend(ChatFormat(tokenizer), answer_script(2))
    calls = {"n": 0}
    original = backend.generate

    def crash_after_two_chunks(prompts, params):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(prompts, params)

    backend.generate = crash_after_two_chunks
    with pytest.raises(KeyboardInterrupt):
        run_eval(config, backend_factory=lambda name, path: backend)
    assert len(read_jsonl(tmp_path / "eval-run/eval/base/gsm8k.samples.jsonl")) == 12
    resumed = ScriptedBackend(ChatFormat(tokenizer), answer_script(2))
    run_eval(config, backend_factory=lambda name, path: resumed)
    assert len(resumed.calls) == 2
    ids = [r["id"] for r in read_jsonl(tmp_path / "eval-run/eval/base/gsm8k.samples.jsonl")]
    assert len(ids) == len(set(ids)) == 20
    summary = json.loads((tmp_path / "eval-run/eval/base/gsm8k.summary.json").read_text())
    assert summary["pass@1"]["mean"] == 0.5 and summary["pass@1"]["ci95"] == pytest.approx(list(wilson_interval(10, 20)))


def test_finished_evaluations_open_no_model(tmp_path, tokenizer):
    config = config_for(tmp_path, **{"eval.benchmarks": ["gsm8k", "math500"], "eval.adapters": ["good=/adapters/good"]})
    rows = [{"problem": f"Q{i}: what is {i}?", "answer": str(i)} for i in range(20)]
    (tmp_path / "data" / "math500_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scripts = {"base": answer_script(4), "good": answer_script(1)}
    opened = []

    def factory(name, path):
        opened.append(name)
        return ScriptedBackend(ChatFormat(tokenizer), scripts[name])

    first = run_eval(config, backend_factory=factory)
    assert opened == ["base", "good"]  # once per model, for both benchmarks
    (tmp_path / "eval-run/eval/good/math500.summary.json").unlink()  # as if interrupted before its summary
    manifest = json.loads((tmp_path / "eval-run/manifest.json").read_text())
    del manifest["stages"]["eval/good/math500"]
    (tmp_path / "eval-run/manifest.json").write_text(json.dumps(manifest))
    opened.clear()
    assert run_eval(config, backend_factory=factory) == first
    assert opened == ["good"]  # only the model with an unfinished benchmark was opened


def test_report_table_and_plots_match_summaries(tmp_path, tokenizer):
    training = tmp_path / "train-run"  # the adapter's own run folder, whose compute the report sums
    (training / "distill" / "adapter").mkdir(parents=True)
    (training / "manifest.json").write_text(json.dumps({"run_folder_version": 2, "stages": {}}))
    (training / "stats.json").write_text(json.dumps({"rollouts": {"generated_tokens": 100, "this_invocation": {"wall_s": 10.0}},
                                                     "distill": {"steps": 3, "this_invocation": {"wall_s": 5.5}}}))
    config = config_for(tmp_path, **{"eval.adapters": [f"ssb={training / 'distill' / 'adapter'}"]})
    scripts = {"base": answer_script(4), "ssb": answer_script(2)}
    run_eval(config, backend_factory=lambda name, path: ScriptedBackend(ChatFormat(tokenizer), scripts[name]))
    distill = tmp_path / "eval-run" / "distill"
    distill.mkdir()
    (distill / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "grad_norm": 0.5, "sequences": 4,
                                                               "solution_tokens": 400 + s}) + "\n" for s in range(1, 6)))
    path = write_report(tmp_path / "eval-run")
    text = path.read_text()
    for name in ("accuracy.png", "training.png"):
        png = tmp_path / "eval-run" / name
        assert png.exists() and png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    base_ci = wilson_interval(5, 20)
    assert f"| base | 25.0 ± {100 * (base_ci[1] - base_ci[0]) / 2:.1f} (n=20) |" in text
    assert "| ssb | 50.0 ±" in text
    assert "eval/base/gsm8k" in text and "5 optimiser steps" in text
    # Paired on the same 20 questions: ssb gains questions 2, 6, 10, 14, 18 and loses none; exact p = 2 / 2**5.
    assert "| ssb | gsm8k | +25.0 | [+5.5, +44.5] | 5 / 0 (n=20) | 0.062 |" in text
    assert "| base | - | - | 0 | 0 | 0 |" in text and "| ssb | train-run | rollouts, distill | 100 | 3 | 16 |" in text


def test_cli_eval_on_a_tiny_model_with_an_adapter(tmp_path, tiny_model_dir):
    from peft import LoraConfig, PeftModel, get_peft_model

    from ssb.config import ModelConfig
    from ssb.models import cpu_record, load_model, load_tokenizer
    from ssb.prompts import load_prompts
    from tiny import greedy_reference, perturb_lora, recorded

    model_config = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    peft_model = get_peft_model(load_model(model_config), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    perturb_lora(peft_model, seed=1)  # PEFT's B = 0 would make the adapter compute exactly what the base does
    peft_model.save_pretrained(tmp_path / "adapter")
    data = tmp_path / "data"
    write_benchmark(data, "gsm8k", 3)
    args = ["eval", "--model", str(tiny_model_dir), "--adapter", f"lora={tmp_path / 'adapter'}", "--benchmarks", "gsm8k",
            "--max-new-tokens", "6", "--limit", "2", "--model.dtype", "float32", "--data-dir", str(data), "--progress=false",
            "--backend.name=hf"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    samples = {}
    for model in ("base", "lora"):
        summary = json.loads((tmp_path / f"out/eval/{model}/gsm8k.summary.json").read_text())
        assert summary["n_questions"] == 2 and summary["pass@1"]["mean"] == 0.0
        assert summary["mean_completion_tokens"] <= 6
        # What generated it: the backend as resolved, the device, this CPU (the report warns where compared ones differ).
        assert summary["engine"] == {"backend": {"name": "hf", "dtype": "float32"}, "device": "cpu", "cpu": cpu_record()}
        samples[model] = read_jsonl(tmp_path / f"out/eval/{model}/gsm8k.samples.jsonl")

    # Each variant's completions are those of a plain greedy loop over that variant's model: the base
    # for "base", the base with the adapter for "lora" (which must not quietly evaluate the base).
    tokenizer = load_tokenizer(model_config)
    system = load_prompts().system
    base = load_model(model_config).eval()
    with_adapter = PeftModel.from_pretrained(load_model(model_config), tmp_path / "adapter").eval()
    for model, reference in (("base", base), ("lora", with_adapter)):
        for i, record in enumerate(samples[model]):
            conversation = [{"role": "system", "content": system}, {"role": "user", "content": f"Q{i}: what is {i}?"}]
            assert record["prompt"] == conversation
            got, want = record["completions"][0], greedy_reference(reference, tokenizer, conversation, 6)
            assert recorded(got) == recorded(want), (model, i)
    assert [r["completions"][0]["text"] for r in samples["lora"]] != [r["completions"][0]["text"] for r in samples["base"]]

    # Greedy decoding is deterministic: a fresh evaluation reproduces the same completions.
    assert main([*args, "--out", str(tmp_path / "again")]) == 0
    again = read_jsonl(tmp_path / "again/eval/lora/gsm8k.samples.jsonl")
    assert [r["completions"] for r in samples["lora"]] == [r["completions"] for r in again]
    assert main(["report", str(tmp_path / "out")]) == 0 and (tmp_path / "out/report.md").exists()


def test_adapter_trained_on_another_base_is_refused(tmp_path, tiny_model_dir, capsys):
    from peft import LoraConfig, get_peft_model

    from ssb.config import ModelConfig
    from ssb.models import load_model
    from tiny import save_tiny_model

    other = save_tiny_model(tmp_path / "other-base", seed=1)
    get_peft_model(load_model(ModelConfig(name_or_path=str(other))), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    write_benchmark(tmp_path / "data", "gsm8k", 2)
    code = main(["eval", "--model", str(tiny_model_dir), "--adapter", f"x={tmp_path / 'adapter'}", "--benchmarks", "gsm8k",
                 "--max-new-tokens", "2", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"),
                 "--progress=false", "--backend.name=hf"])
    assert code == 2
    err = capsys.readouterr().err
    assert "adapter was trained on" in err and str(other) in err and "Traceback" not in err


def test_a_synthetic_benchmark_is_the_test_split_of_the_training_data_seed(tmp_path, tokenizer):
    from ssb.synthetic import synthetic_records

    config = load_config(None, {"run_dir": str(tmp_path / "run"), "data.source": "synthetic", "data.shuffle_seed": 5, "data.limit": 40,
                                "eval.benchmarks": ["synthetic"], "eval.limit": 6, "progress": False})
    run_eval(config, backend_factory=lambda name, path: ScriptedBackend(ChatFormat(tokenizer), lambda user, s: "\\boxed{0}"))
    asked = [r["prompt"][1]["content"] for r in read_jsonl(tmp_path / "run/eval/base/synthetic.samples.jsonl")]
    assert asked == [r["question"] for r in synthetic_records(6, 5, "test")]
    assert not set(asked) & {r["question"] for r in synthetic_records(40, 5, "train")}


def test_an_adapter_in_either_peft_format_has_a_fingerprint_of_its_weights(tmp_path):
    """A retrained adapter must be re-evaluated whichever format PEFT saved it in (safetensors or the older .bin)."""
    import hashlib

    from ssb.evaluation import adapter_fingerprint

    safetensors, old = tmp_path / "st", tmp_path / "bin"
    safetensors.mkdir()
    old.mkdir()
    (safetensors / "adapter_model.safetensors").write_bytes(b"weights-1")
    (old / "adapter_model.bin").write_bytes(b"weights-1")
    expected = hashlib.sha256(b"weights-1").hexdigest()[:16]
    assert adapter_fingerprint(str(safetensors)) == adapter_fingerprint(str(old)) == expected
    (old / "adapter_model.bin").write_bytes(b"weights-2")
    assert adapter_fingerprint(str(old)) == hashlib.sha256(b"weights-2").hexdigest()[:16]
    assert adapter_fingerprint(None) is None and adapter_fingerprint(str(tmp_path)) is None


@pytest.mark.parametrize("flags, field", [(["--adapter", "../../../x={adapter}"], "eval.adapters: '../../../x'"),
                                          (["--adapter", "a/b={adapter}"], "eval.adapters: 'a/b'"),
                                          (["--adapter", "..={adapter}"], "eval.adapters: '..'"),
                                          (["--benchmarks", "../gsm8k"], "eval.benchmarks: '../gsm8k'")])
def test_names_that_become_paths_are_refused_before_anything_is_written(tmp_path, capsys, flags, field):
    """eval/<adapter>/<benchmark>.samples.jsonl: a name with a separator or '..' would write outside the output folder."""
    out = tmp_path / "deep" / "er" / "out"
    args = ["eval", "--model", "unused", "--out", str(out), *[f.format(adapter=tmp_path / "adapter") for f in flags]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert field in err and "is not a name" in err and err.count("\n") == 1
    assert not any(tmp_path.rglob("*.samples.jsonl")) and not out.exists()
