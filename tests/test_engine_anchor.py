"""studies/common/engine_anchor.py: this machine's anchor name, and whether a committed anchor was graded by its engine."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "common" / "engine_anchor.py"
spec = importlib.util.spec_from_file_location("engine_anchor", SCRIPT)
engine_anchor = importlib.util.module_from_spec(spec)
spec.loader.exec_module(engine_anchor)

XEON = ["amx_bf16", "amx_int8", "avx2", "avx512_bf16", "avx512f"]
EPYC = ["avx2", "avx512_bf16", "avx512f"]


def test_the_name_is_the_unit_that_decides_the_bf16_kernels():
    assert [engine_anchor.name(f) for f in (XEON, EPYC, ["avx2", "fma"], [])] == ["base-amx", "base-avx512bf16", "base-avx2", "base-cpu"]


def test_check_accepts_only_an_anchor_graded_on_this_cpus_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ssb.models.cpu_record", lambda: {"model": "Intel Xeon", "kernel_flags": XEON})
    anchor = tmp_path / "base-amx"
    anchor.mkdir()
    assert engine_anchor.main(["check", str(anchor)]) == 1 and "no evaluation summary to check" in capsys.readouterr().err
    for benchmark, flags in (("gsm8k", XEON), ("math500", XEON)):
        (anchor / f"{benchmark}.summary.json").write_text(json.dumps({"engine": {"cpu": {"model": "Intel Xeon", "kernel_flags": flags}}}))
    assert engine_anchor.main(["check", str(anchor)]) == 0
    assert engine_anchor.main(["name"]) == 0 and capsys.readouterr().out == "base-amx\n"
    (anchor / "math500.summary.json").write_text(json.dumps({"engine": {"cpu": {"model": "Intel Xeon", "kernel_flags": XEON[1:]}}}))
    assert engine_anchor.main(["check", str(anchor)]) == 1
    assert f"{anchor / 'math500.summary.json'}: graded on kernel flags" in capsys.readouterr().err
    (anchor / "math500.summary.json").write_text(json.dumps({"model": "base"}))  # graded before engines were recorded
    assert engine_anchor.main(["check", str(anchor)]) == 1


def summary(flags):
    return json.dumps({"engine": {"cpu": {"model": "a CPU", "kernel_flags": flags}}})


def test_committed_lists_this_cpus_anchors_after_checking_their_flags_and_benchmarks(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ssb.models.cpu_record", lambda: {"model": "Intel Xeon", "kernel_flags": XEON})
    evidence, onpolicy = tmp_path / "evidence" / "results", tmp_path / "onpolicy" / "results"
    assert engine_anchor.main(["committed", str(evidence), str(onpolicy)]) == 0 and capsys.readouterr().out == ""
    (evidence / "base-avx512bf16").mkdir(parents=True)  # another unit's anchor: not this one's
    anchor = onpolicy / "base-amx"
    anchor.mkdir(parents=True)
    (anchor / "gsm8k.summary.json").write_text(summary(XEON))
    assert engine_anchor.main(["committed", "--needs", "gsm8k", str(evidence), str(onpolicy)]) == 0
    assert capsys.readouterr().out == f"{anchor}\n"
    assert engine_anchor.main(["committed", "--needs", "gsm8k,math500", str(evidence), str(onpolicy)]) == 1
    assert capsys.readouterr().err.startswith(f"{anchor}: no math500 evaluation: it cannot anchor those arms")
    assert engine_anchor.main(["committed", "--needs", "gsm8k", str(evidence)]) == 0  # a folder not searched
    assert capsys.readouterr().out == ""
    (anchor / "gsm8k.summary.json").write_text(summary(EPYC))
    assert engine_anchor.main(["committed", str(evidence), str(onpolicy)]) == 1
    assert capsys.readouterr().err.startswith(f"{anchor / 'gsm8k.summary.json'}: graded on kernel flags")


def run_anchor_here(root, plan_text):
    """engine_anchor_here as a driver calls it, with ssb's stages, the export and git replaced by a log of their calls."""
    common = root / "studies" / "common"
    common.mkdir(parents=True, exist_ok=True)
    for script in ("engine_anchor.py", "engine_anchor.sh"):
        (common / script).write_text((SCRIPT.parent / script).read_text())
    (root / "plan.yaml").write_text(plan_text)
    driver = """set -euo pipefail
config=evidence runs=runs/study eval_engine=(--backend.openvino.inference_precision bf16)
gsm8k=(--eval.benchmarks "[gsm8k]" --eval.limit 500)
math=(--eval.benchmarks "[math500]" --eval.limit 200)
step() { echo "step $*" >> calls; }
commit() { echo "commit $1" >> calls; }
python3() { if [[ $1 == */evidence_export.py ]]; then echo "export ${*:2}" >> calls; else "$PYTHON" "$@"; fi; }
. studies/common/engine_anchor.sh
engine_anchor_here studies/study/results plan.yaml gsm8k math
"""
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", "-c", driver], cwd=root, env=env, capture_output=True, text=True)
    calls = (root / "calls").read_text().splitlines() if (root / "calls").exists() else []
    return done, calls


def test_engine_anchor_here_grades_the_base_model_once_per_engine(tmp_path):
    from ssb.models import cpu_record

    flags = cpu_record()["kernel_flags"]
    name = engine_anchor.name(flags)
    done, calls = run_anchor_here(tmp_path, "engine_anchors: [base]\n")
    engine = "--backend.openvino.inference_precision bf16"
    assert done.returncode == 0, done.stderr
    assert calls == [
        f"step eval --config evidence --run_dir runs/study-{name} {engine} --eval.benchmarks [gsm8k] --eval.limit 500",
        f"step eval --config evidence --run_dir runs/study-{name} {engine} --eval.benchmarks [math500] --eval.limit 200",
        f"export arm {name} --eval-dir runs/study-{name} --model base --results studies/study/results",
        f"commit {name}: the base model graded by this engine (the anchor of its arms)",
    ]
    assert f"note: {name} is not yet in plan.yaml's engine_anchors" in done.stderr

    (tmp_path / "calls").unlink()
    anchor = tmp_path / "studies" / "onpolicy" / "results" / name  # committed by another study, on this engine
    anchor.mkdir(parents=True)
    (anchor / "gsm8k.summary.json").write_text(summary(flags))
    done, calls = run_anchor_here(tmp_path, f"engine_anchors: [base, {name}]\n")
    assert done.returncode != 0 and calls == []  # it never graded math500, which this driver's arms need
    assert f"{Path('studies') / 'onpolicy' / 'results' / name}: no math500 evaluation" in done.stderr
    (anchor / "math500.summary.json").write_text(summary(flags))
    done, calls = run_anchor_here(tmp_path, f"engine_anchors: [base, {name}]\n")
    assert done.returncode == 0 and calls == [] and "note:" not in done.stderr

    (anchor / "math500.summary.json").write_text(summary(flags + ["another_flag"]))
    done, calls = run_anchor_here(tmp_path, f"engine_anchors: [base, {name}]\n")
    assert done.returncode != 0 and calls == []
    assert "it cannot anchor this engine's arms" in done.stderr
