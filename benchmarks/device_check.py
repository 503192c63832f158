"""GPU check of every stage on a tiny random Qwen2 model: placement, bf16 defaults, exactness in fp32.

Builds a tiny model offline, then on the GPU:
1. fp32: one batched teacher forward against the token-by-token loop (max |diff| of logits), and
   stored ``hidden`` targets against ``full`` logits;
2. defaults (bf16 on GPU): rollouts with the real HF backend, refine with a scripted backend (the
   random model never boxes an answer), teacher targets, a few distillation steps, and ``ssb eval``
   of the base model and the trained adapter.
Prints one JSON object. It builds its inputs with the tests' own helpers (tiny.py, helpers.py, scripted.py), so it runs
with tests/ on the import path (src/ too on a machine where ssb is not installed):

    PYTHONPATH=src:tests python benchmarks/device_check.py --out /tmp/device_check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from ssb.alignment import align_examples, pack, solution_hidden_states
from ssb.chat import ChatFormat
from ssb.config import load_config
from ssb.distillation import run_distill
from ssb.evaluation import run_eval
from ssb.generation import LazyBackend
from ssb.models import load_model, load_tokenizer
from ssb.refinement import run_refine
from ssb.rollouts import run_rollouts
from ssb.teacher_targets import run_teacher

TESTS_HELPERS = "the tests' helpers: run it as PYTHONPATH=src:tests python benchmarks/device_check.py"


def phase1(root: Path, model_dir: Path, run: str, **overrides):
    from helpers import write_questions
    from scripted import ScriptedBackend, refine_script, rollout_script

    data = write_questions(root / "questions.jsonl", 24)
    config = load_config(None, {"run_dir": str(root / run), "data.source": "jsonl", "data.path": str(data),
                                "model.name_or_path": str(model_dir), "rollouts.chunk_questions": 8, "progress": False,
                                "distill.epochs": 1, "distill.batch_size": 4, "distill.micro_batch_size": 2, "distill.lora.r": 4,
                                "distill.warmup_steps": 0, **overrides})
    chat = ChatFormat(load_tokenizer(config.model))
    run_rollouts(config, backend=ScriptedBackend(chat, rollout_script))
    run_refine(config, backend=ScriptedBackend(chat, refine_script))
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=f"Needs {TESTS_HELPERS}.")
    parser.add_argument("--out", default="/tmp/device_check")
    args = parser.parse_args()
    try:  # the tests' modules, found through PYTHONPATH only once there is something to build
        from helpers import write_benchmark
        from tiny import save_tiny_model
    except ModuleNotFoundError as error:
        raise SystemExit(f"{error}: {TESTS_HELPERS}") from None
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    model_dir = save_tiny_model(root / "model")
    report: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch": torch.__version__}

    # 1. exactness in fp32 on the device
    fp32 = phase1(root, model_dir, "fp32", **{"model.dtype": "float32", "teacher.format": "full", "teacher.dtype": "float32"})
    model = load_model(fp32.model)
    chat = ChatFormat(load_tokenizer(fp32.model))
    examples = align_examples(Path(fp32.run_dir) / "teacher.jsonl", Path(fp32.run_dir) / "student.jsonl", chat)[:3]
    with torch.no_grad():
        batch = pack([e.teacher_prompt_ids for e in examples], [e.solution_ids for e in examples], chat.pad_id)
        batched = model.get_output_embeddings()(solution_hidden_states(model, batch))
        loop = torch.stack([model(torch.tensor([e.teacher_prompt_ids + e.solution_ids[:j]], device=model.device)).logits[0, -1]
                            for e in examples for j in range(len(e.solution_ids))])
    report["fp32_batched_vs_loop_max_abs_diff"] = (batched - loop).abs().max().item()
    run_teacher(fp32)
    full = load_file(next((Path(fp32.run_dir) / "teacher").glob("targets-*.safetensors")))["logits"]
    hidden_cfg = phase1(root, model_dir, "fp32-hidden", **{"model.dtype": "float32", "teacher.dtype": "float32"})
    run_teacher(hidden_cfg)
    hidden = load_file(next((Path(hidden_cfg.run_dir) / "teacher").glob("targets-*.safetensors")))["hidden"]
    with torch.no_grad():
        report["fp32_hidden_vs_full_max_abs_diff"] = (model.get_output_embeddings()(hidden.to(model.device)).cpu() - full).abs().max().item()

    # 2. defaults (bf16 on GPU), real generation
    config = phase1(root, model_dir, "bf16")
    start = time.monotonic()
    rollout_cfg = load_config(None, {"run_dir": str(root / "bf16-rollouts"), "data.source": "jsonl", "data.path": str(root / "questions.jsonl"),
                                     "model.name_or_path": str(model_dir), "rollouts.sampling.max_new_tokens": 32, "progress": False})
    stats = run_rollouts(rollout_cfg, backend=LazyBackend(rollout_cfg))
    report["bf16_rollouts"] = {"rollouts": stats["rollouts"], "generated_tokens": stats["generated_tokens"],
                               "wall_s": round(time.monotonic() - start, 2)}
    report["bf16_teacher"] = run_teacher(config)
    distill = run_distill(config)
    metrics = [json.loads(line) for line in (Path(config.run_dir) / "distill" / "metrics.jsonl").read_text().splitlines()]
    report["bf16_distill"] = {"steps": distill["steps"], "losses": [round(m["loss"], 5) for m in metrics],
                              "dtype": str(load_model(config.model).dtype)}
    write_benchmark(root / "bench", "gsm8k", 4)
    eval_cfg = load_config(None, {"run_dir": config.run_dir, "model.name_or_path": str(model_dir), "data.data_dir": str(root / "bench"),
                                  "eval.benchmarks": ["gsm8k"], "eval.sampling.max_new_tokens": 16,
                                  "eval.adapters": [f"ssb={Path(config.run_dir) / 'distill' / 'adapter'}"], "progress": False})
    report["bf16_eval"] = run_eval(eval_cfg)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
