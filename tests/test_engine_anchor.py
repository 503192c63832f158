"""studies/common/engine_anchor.py: this machine's anchor name, and whether a committed anchor was graded by its engine."""

import json
import os
import subprocess
import sys
from pathlib import Path

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SCRIPT = STUDIES / "common" / "engine_anchor.py"

XEON = ["amx_bf16", "amx_int8", "avx2", "avx512_bf16", "avx512f"]
EPYC = ["avx2", "avx512_bf16", "avx512f"]


def anchor(*args: str, flags: list[str] | None = None) -> subprocess.CompletedProcess:
    """The script's command line, on a CPU with ``flags`` (default: this one)."""
    given = ["--kernel-flags", ",".join(flags)] if flags is not None else []
    return subprocess.run([sys.executable, str(SCRIPT), *given, *args], capture_output=True, text=True)


def test_the_name_is_the_unit_that_decides_the_bf16_kernels():
    names = [anchor("name", flags=f).stdout for f in (XEON, EPYC, ["avx2", "fma"], [])]
    assert names == ["base-amx\n", "base-avx512bf16\n", "base-avx2\n", "base-cpu\n"]


def test_check_accepts_only_an_anchor_graded_on_this_cpus_flags(tmp_path):
    folder = tmp_path / "base-amx"
    folder.mkdir()
    done = anchor("check", str(folder), flags=XEON)
    assert done.returncode == 1 and "no evaluation summary to check" in done.stderr
    for benchmark, flags in (("gsm8k", XEON), ("math500", XEON)):
        (folder / f"{benchmark}.summary.json").write_text(json.dumps({"engine": {"cpu": {"model": "Intel Xeon", "kernel_flags": flags}}}))
    assert anchor("check", str(folder), flags=XEON).returncode == 0
    (folder / "math500.summary.json").write_text(json.dumps({"engine": {"cpu": {"model": "Intel Xeon", "kernel_flags": XEON[1:]}}}))
    done = anchor("check", str(folder), flags=XEON)
    assert done.returncode == 1 and f"{folder / 'math500.summary.json'}: graded on kernel flags" in done.stderr
    (folder / "math500.summary.json").write_text(json.dumps({"model": "base"}))  # graded before engines were recorded
    assert anchor("check", str(folder), flags=XEON).returncode == 1


def test_without_kernel_flags_it_is_this_cpus_anchor():
    from ssb.models import cpu_record

    assert anchor("name").stdout == anchor("name", flags=cpu_record()["kernel_flags"]).stdout


def test_a_command_it_does_not_know_shows_the_usage():
    done = anchor("grade", flags=XEON)
    assert done.returncode == 2 and "engine_anchor.py name" in done.stderr


def summary(flags):
    return json.dumps({"engine": {"cpu": {"model": "a CPU", "kernel_flags": flags}}})


def test_committed_lists_this_cpus_anchors_after_checking_their_flags_and_benchmarks(tmp_path):
    evidence, onpolicy = tmp_path / "evidence" / "results", tmp_path / "onpolicy" / "results"
    done = anchor("committed", str(evidence), str(onpolicy), flags=XEON)
    assert done.returncode == 0 and done.stdout == ""
    (evidence / "base-avx512bf16").mkdir(parents=True)  # another unit's anchor: not this one's
    folder = onpolicy / "base-amx"
    folder.mkdir(parents=True)
    (folder / "gsm8k.summary.json").write_text(summary(XEON))
    done = anchor("committed", "--needs", "gsm8k", str(evidence), str(onpolicy), flags=XEON)
    assert done.returncode == 0 and done.stdout == f"{folder}\n"
    done = anchor("committed", "--needs", "gsm8k,math500", str(evidence), str(onpolicy), flags=XEON)
    assert done.returncode == 1 and done.stderr.startswith(f"{folder}: no math500 evaluation: it cannot anchor those arms")
    done = anchor("committed", "--needs", "gsm8k", str(evidence), flags=XEON)  # a folder not searched
    assert done.returncode == 0 and done.stdout == ""
    (folder / "gsm8k.summary.json").write_text(summary(EPYC))
    done = anchor("committed", str(evidence), str(onpolicy), flags=XEON)
    assert done.returncode == 1 and done.stderr.startswith(f"{folder / 'gsm8k.summary.json'}: graded on kernel flags")


def run_anchor_here(root, plan_text):
    """engine_anchor_here (studies/common/lib.sh) as a driver calls it, with ssb's stages, the export and git replaced by a
    log of their calls."""
    common = root / "studies" / "common"
    common.mkdir(parents=True, exist_ok=True)
    for script in ("engine_anchor.py", "lib.sh"):
        (common / script).write_text((SCRIPT.parent / script).read_text())
    (root / "plan.yaml").write_text(plan_text)
    driver = """set -euo pipefail
config=evidence runs=runs/study eval_engine=(--backend.openvino.inference_precision bf16)
gsm8k=(--eval.benchmarks "[gsm8k]" --eval.limit 500)
math=(--eval.benchmarks "[math500]" --eval.limit 200)
. studies/common/lib.sh
step() { echo "step $*" >> calls; }
commit() { echo "commit $1" >> calls; }
python3() { if [[ $1 == */evidence_export.py ]]; then echo "export ${*:2}" >> calls; else "$PYTHON" "$@"; fi; }
engine_anchor_here studies/study/results plan.yaml gsm8k math
"""
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", "-c", driver], cwd=root, env=env, capture_output=True, text=True)
    calls = (root / "calls").read_text().splitlines() if (root / "calls").exists() else []
    return done, calls


def test_engine_anchor_here_grades_the_base_model_once_per_engine(tmp_path):
    from ssb.models import cpu_record

    flags = cpu_record()["kernel_flags"]
    name = anchor("name").stdout.strip()
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
    committed = tmp_path / "studies" / "onpolicy" / "results" / name  # committed by another study, on this engine
    committed.mkdir(parents=True)
    (committed / "gsm8k.summary.json").write_text(summary(flags))
    done, calls = run_anchor_here(tmp_path, f"engine_anchors: [base, {name}]\n")
    assert done.returncode != 0 and calls == []  # it never graded math500, which this driver's arms need
    assert f"{Path('studies') / 'onpolicy' / 'results' / name}: no math500 evaluation" in done.stderr
    (committed / "math500.summary.json").write_text(summary(flags))
    done, calls = run_anchor_here(tmp_path, f"engine_anchors: [base, {name}]\n")
    assert done.returncode == 0 and calls == [] and "note:" not in done.stderr

    (committed / "math500.summary.json").write_text(summary(flags + ["another_flag"]))
    done, calls = run_anchor_here(tmp_path, f"engine_anchors: [base, {name}]\n")
    assert done.returncode != 0 and calls == []
    assert "it cannot anchor this engine's arms" in done.stderr
