"""Which OpenVINO weight format and inference precision is fastest per CPU class, at what accuracy.

Greedy generation on the first N GSM8K test questions (the ``ssb eval`` prompt), for ``hf`` float32
(the baseline of every ratio), ``hf`` bfloat16 where the CPU has bf16 units, and OpenVINO with int8,
int4, fp16 and fp32 weights at each inference precision that applies. Every answer is graded as
``ssb eval`` grades it; each configuration's accuracy is paired with openvino int8 at precision
``auto`` on the same questions. ``auto`` here is OpenVINO's own choice (no precision hint: bf16 where
the CPU has bf16 units, else f32), ssb's default before this benchmark; ssb's ``auto`` now resolves
to f32 on every CPU class (``ssb.generation.openvino.precision_choice``), the ``f32`` rows.

CPU classes: ``native`` (this CPU as it is) and ``avx2``: an AVX2-only CPU (no AVX-512, VNNI or
bf16) emulated on a bigger one by capping the ISA of the libraries, which each measurement reads
when its process starts (so every measurement is a process of its own):
- torch: ``ATEN_CPU_CAPABILITY=avx2`` (ATen kernels), ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (float32
  matmuls), ``ONEDNN_MAX_CPU_ISA=AVX2`` (its oneDNN);
- OpenVINO: ``ONEDNN_MAX_CPU_ISA=AVX2`` caps the plugin's oneDNN kernels (the matmuls, eltwise),
  but the release wheel reads CPUID itself for other choices: it still picks bf16 for ``auto`` and
  int8 activation quantisation (a VNNI path), which the capped oneDNN then cannot build. So the
  emulation sets what a real AVX2-only CPU gets from those choices: precision f32 (``auto``'s
  choice without bf16 units) and ``DYNAMIC_QUANTIZATION_GROUP_SIZE=0`` (the plugin quantises
  activations only with VNNI). RMSNorm and attention kernels stay AVX-512, so the emulation is
  partial; ``isa_check`` records the kernel each layer type ran (OpenVINO's per-layer profile) in
  each class, and the time of one float32 matmul through torch.
Blocks of questions run in alternating orders (block 0 in grid order, block 1 reversed, ...) so
load from other work on the machine spreads over every configuration; speeds compare only as
ratios within one run.

    python benchmarks/engine_formats.py [--questions 24] [--blocks 2] [--max-new-tokens 256] [--classes native,avx2] [--configs ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_info

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT = "openvino:int8:auto"  # the accuracy reference: int8 weights, OpenVINO's own precision
TORCH_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
CLASSES = {  # class -> (environment, OpenVINO properties the emulation sets, what "auto" precision resolves to)
    "native": ({}, {}, None),
    "avx2": (TORCH_AVX2, {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}, "f32"),
}


def grid(cpu_class: str, has_bf16: bool) -> list[str]:
    """Configurations measured in a class: ``hf:DTYPE`` or ``openvino:WEIGHTS:PRECISION``."""
    emulated_avx2 = cpu_class == "avx2"
    specs = ["hf:float32"] + (["hf:bfloat16"] if has_bf16 and not emulated_avx2 else [])
    # auto resolves to bf16 on a CPU with bf16 units (then bf16 is auto) and to f32 without (then f32 is auto).
    precisions = ["auto", "f32"] if has_bf16 and not emulated_avx2 else ["auto"]
    return specs + [f"openvino:{w}:{p}" for w in ("int8", "int4", "fp16", "fp32") for p in precisions]


def worker(args) -> None:
    """One configuration on one block of questions, in this process; prints one JSON line."""
    from ssb.chat import messages
    from ssb.config import DataConfig, load_config
    from ssb.data import load_problems
    from ssb.generation import SamplingParams
    from ssb.models import load_chat_format
    from ssb.prompts import load_prompts

    name, weights, precision = (args.worker.split(":") + [""])[:3]
    _, properties, auto_is = CLASSES[args.cpu_class]
    problems = load_problems(DataConfig(source="gsm8k", split="test", data_dir=args.data_dir, limit=args.stop)).problems[args.start:]
    system = load_prompts().system
    prompts = [messages(system, p.question) for p in problems]
    overrides = {"model.name_or_path": args.model, "backend.batch_size": args.batch_size, "progress": False}
    start = time.monotonic()
    if name == "hf":
        config = load_config(None, {**overrides, "backend.name": "hf", "model.dtype": weights})
        from ssb.generation import make_backend

        backend = make_backend(config, load_chat_format(config.model))
    else:
        from ssb.generation.openvino import OpenVINOBackend
        from ssb.generation.openvino_export import export_openvino
        from ssb.models import local_model_folder
        from ssb.packaged_models import default_cache_dir

        config = load_config(None, {**overrides, "backend.name": "openvino", "backend.openvino.weight_format": weights})
        ir = export_openvino(local_model_folder(config.model), default_cache_dir(), weights)
        context = json.loads((ir / "config.json").read_text()).get("max_position_embeddings")
        resolved = auto_is if precision == "auto" and auto_is else precision
        backend = OpenVINOBackend(ir, load_chat_format(config.model), context, max_num_seqs=args.batch_size, kv_cache_gb=2,
                                  inference_precision=resolved, progress=False, properties=properties)
        _ = backend.pipeline  # compile now, so that generation time is generation alone
    build_s = time.monotonic() - start
    load_before = os.getloadavg()
    start = time.monotonic()
    out = backend.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=args.max_new_tokens, seed=0))
    seconds = time.monotonic() - start
    rows = [row[0] for row in out]
    print(json.dumps({"build_s": build_s, "seconds": seconds, "loadavg": [load_before, os.getloadavg()],
                      "ids": [p.id for p in problems], "gold": [p.gold for p in problems], "texts": [c.text for c in rows],
                      "tokens": [c.num_tokens for c in rows], "stopped": [c.finish_reason == "stop" for c in rows]}))


ISA_CHECK = """
import collections, json, sys, time
import numpy as np, openvino as ov, torch
ir, precision, properties = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
core = ov.Core()
compiled = core.compile_model(core.read_model(ir + "/openvino_model.xml"), "CPU",
                              {"PERF_COUNT": True, **({} if precision == "auto" else {"INFERENCE_PRECISION_HINT": precision}), **properties})
request = compiled.create_infer_request()
feed = {"input_ids": np.ones((1, 16), np.int64), "attention_mask": np.ones((1, 16), np.int64),
        "position_ids": np.arange(16, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}
request.infer({k: v for k, v in feed.items() if k in {i.any_name for i in compiled.inputs}})
kernels = collections.Counter(f"{p.node_type}:{p.exec_type}" for p in request.profiling_info if p.status == p.Status.EXECUTED)
a, w = torch.randn(24, 896), torch.randn(4864, 896)
torch.nn.functional.linear(a, w)
start = time.perf_counter()
for _ in range(50):
    torch.nn.functional.linear(a, w)
print(json.dumps({"openvino_precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
                  "openvino_kernels": dict(kernels.most_common(12)), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                  "torch_fp32_linear_24x896x4864_ms": round((time.perf_counter() - start) / 50 * 1e3, 3)}))
"""


def isa_check(cpu_class: str, model: str) -> dict:
    """What each class ran: OpenVINO's kernel per layer type for int8 weights at auto precision, and torch's ISA."""
    from ssb.config import load_config
    from ssb.generation.openvino_export import export_openvino
    from ssb.models import local_model_folder
    from ssb.packaged_models import default_cache_dir

    env, properties, auto_is = CLASSES[cpu_class]
    ir = export_openvino(local_model_folder(load_config(None, {"model.name_or_path": model}).model), default_cache_dir(), "int8")
    result = subprocess.run([sys.executable, "-c", ISA_CHECK, str(ir), auto_is or "auto", json.dumps(properties)],
                            env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return {"environment": env, "openvino_properties": properties, **json.loads(result.stdout.strip().splitlines()[-1])}


def measure(spec: str, cpu_class: str, start: int, stop: int, args) -> dict:
    command = [sys.executable, __file__, "--worker", spec, "--cpu-class", cpu_class, "--start", str(start), "--stop", str(stop),
               "--model", args.model, "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
               "--data-dir", args.data_dir]
    result = subprocess.run(command, env={**os.environ, **CLASSES[cpu_class][0]}, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{cpu_class} {spec} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summarise(blocks: list[dict], default_correct: list[float] | None, baseline_tps: float | None) -> dict:
    from ssb.grading import grade
    from ssb.stats.metrics import mean_with_ci, paired_difference

    texts = [t for b in blocks for t in b["texts"]]
    gold = [g for b in blocks for g in b["gold"]]
    correct = [float(grade(t, g).correct) for t, g in zip(texts, gold)]
    tokens, seconds = sum(sum(b["tokens"]) for b in blocks), sum(b["seconds"] for b in blocks)
    row = {"useful_tokens_per_s": round(tokens / seconds, 1), "useful_tokens": tokens, "seconds": round(seconds, 1),
           "per_block_tokens_per_s": [round(sum(b["tokens"]) / b["seconds"], 1) for b in blocks],
           "build_s": [round(b["build_s"], 1) for b in blocks], "loadavg": [b["loadavg"] for b in blocks],
           "stopped": sum(sum(b["stopped"]) for b in blocks), "accuracy": mean_with_ci(correct, binary=True), "correct": correct}
    if baseline_tps:
        row["ratio_vs_hf_float32"] = round(row["useful_tokens_per_s"] / baseline_tps, 2)
    if default_correct is not None:
        row["difference_vs_default"] = paired_difference(correct, default_correct)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--blocks", type=int, default=2, help="the questions split into this many blocks, run in alternating orders")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--classes", default="native,avx2")
    parser.add_argument("--configs", help="only these of the grid (comma-separated; hf:float32 and the default always run)")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--out", default="benchmarks/results/engine_formats.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cpu-class", default="native", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from ssb.models import cpu_bf16_unit

    machine = machine_info()
    has_bf16 = cpu_bf16_unit() is not None
    classes = args.classes.split(",")
    checks = {c: isa_check(c, args.model) for c in classes}
    for c, check in checks.items():
        print(f"{c}: {json.dumps(check)}", flush=True)
    wanted = None if args.configs is None else {"hf:float32", DEFAULT, *args.configs.split(",")}
    specs = {c: [s for s in grid(c, has_bf16) if wanted is None or s in wanted] for c in classes}
    runs = [(c, spec) for c in classes for spec in specs[c]]
    edges = [round(args.questions * i / args.blocks) for i in range(args.blocks + 1)]
    blocks: dict[tuple[str, str], list[dict]] = {run: [] for run in runs}
    for b in range(args.blocks):
        for c, spec in (runs if b % 2 == 0 else runs[::-1]):
            result = measure(spec, c, edges[b], edges[b + 1], args)
            blocks[(c, spec)].append(result)
            print(f"block {b} {c:>6} {spec:>22}: {sum(result['tokens']) / result['seconds']:6.1f} tok/s "
                  f"(load {result['loadavg'][0][0]:.2f})", flush=True)
    results = {}
    for c in classes:
        baseline = summarise(blocks[(c, "hf:float32")], None, None)
        default = summarise(blocks[(c, DEFAULT)], None, None)
        results[c] = {spec: summarise(blocks[(c, spec)], default["correct"], baseline["useful_tokens_per_s"]) for spec in specs[c]}
    for c, rows in results.items():
        for spec, row in rows.items():
            d, a = row["difference_vs_default"], row["accuracy"]
            print(f"{c:>6} {spec:>22}: {row['useful_tokens_per_s']:6.1f} tok/s {row['ratio_vs_hf_float32']:4.2f}x hf fp32, "
                  f"accuracy {a['mean']:.3f}, vs default {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine, "model": args.model,
              "benchmark": "gsm8k test", "questions": args.questions, "blocks": edges, "max_new_tokens": args.max_new_tokens,
              "batch_size": args.batch_size, "sampling": "greedy", "default": DEFAULT,
              "auto_precision_resolves_to": {c: CLASSES[c][2] or ("bf16" if has_bf16 else "f32") for c in classes},
              "isa_check": checks, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
