"""studies/common/engine_anchor.py: this machine's anchor name, and whether a committed anchor was graded by its engine."""

import importlib.util
import json
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
