"""How much of a LoRA adapter survives rounding to the weights it is used with: int8 and bf16.

Two places round a merged adapter. ``ssb eval --eval.adapters`` on the OpenVINO backend merges the
adapter into the float32 base (PEFT) and compresses the merged model to int8 weights (asymmetric, one
scale per output channel); iterated rounds (``rounds`` > 1) merge each round's adapter into a float32
round model that the next round's teacher and distillation load in ``model.dtype``, bf16 on CPUs with
bf16 units. An adapter's change to a weight can be smaller than one int8 or bf16 step, so this
compares, over every LoRA-targeted matrix, the change the adapter asks for (dW = B A alpha / r, in
float32) with the change that arrives (D = rounded(W + dW) - rounded(W); for int8, the dequantised
weights of the two exported IRs):

- gain: <D, dW> / |dW|^2, the share of the adapter's direction that arrives (1 = all of it);
- cosine(D, dW) and the residual |D - gain dW| / |dW| (rounding noise the merge adds), overall and
  the range over matrices;
- |dW| in int8 steps (median over elements) and the share of int8 codes the merge changed;
- the base model's own rounding error |rounded(W) - W| / |dW|, for scale.

Reads the cached IRs (exports them first if they are missing, which takes a minute each):
    python studies/evidence/adapter_rounding.py runs/evidence-ssb/distill/adapter [more adapters] \
        --out studies/evidence/results/adapter_rounding.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ssb.config import ModelConfig
from ssb.generation.openvino_export import export_openvino
from ssb.models import local_model_folder
from ssb.packaged_models import default_cache_dir

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def machine_info() -> dict:
    """This machine as every benchmark result records it: ``python benchmarks/machine.py``'s record."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "machine.py")], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


class Int8Weights:
    """The int8-compressed weights of an IR, dequantised to float32 one at a time (by torch parameter name)."""

    def __init__(self, ir_folder: Path):
        import openvino as ov

        self.model = ov.Core().read_model(ir_folder / "openvino_model.xml")  # the weights stay memory-mapped
        self.constants = {op.get_friendly_name(): op for op in self.model.get_ordered_ops() if op.get_type_name() == "Constant"}

    def codes(self, name: str) -> np.ndarray:
        if f"self.{name}/scale" not in self.constants:
            raise KeyError(f"{name}: not an int8-compressed weight of the exported IR")
        return self.constants[f"self.{name}"].get_data()

    def step(self, name: str) -> np.ndarray:
        """The size of one int8 step of each output channel, shape (rows, 1)."""
        return self.constants[f"self.{name}/scale"].get_data().astype(np.float32)

    def __getitem__(self, name: str) -> np.ndarray:
        zero_point = self.constants.get(f"self.{name}/zero_point")
        offset = zero_point.get_data().astype(np.float32) if zero_point is not None else 0.0
        return (self.codes(name).astype(np.float32) - offset) * self.step(name)


def adapter_deltas(adapter: Path) -> dict[str, np.ndarray]:
    """dW = B A * alpha / r for every LoRA-targeted matrix, by the base model's parameter name."""
    from safetensors.numpy import load_file

    config = json.loads((adapter / "adapter_config.json").read_text())
    if config.get("rank_pattern") or config.get("alpha_pattern") or config.get("use_rslora") or config.get("use_dora"):
        raise ValueError(f"{adapter}/adapter_config.json: per-module ranks, rsLoRA and DoRA are not handled here")
    scaling = config["lora_alpha"] / config["r"]
    tensors = load_file(adapter / "adapter_model.safetensors")
    deltas = {}
    for key, a in tensors.items():
        if ".lora_A." in key:
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            deltas[name] = (b.astype(np.float64) @ a.astype(np.float64) * scaling).astype(np.float32)
    return deltas


class Arrival:
    """Sums over matrices of how a rounded change compares with the change asked for."""

    def __init__(self):
        self.totals = dict.fromkeys(("dot", "delta_sq", "arrived_sq", "base_error_sq"), 0.0)
        self.per_matrix: list[tuple[float, float]] = []  # (cosine, residual / |dW|)

    def add(self, delta: np.ndarray, arrived: np.ndarray, base_error: np.ndarray) -> None:
        delta, arrived = delta.astype(np.float64).ravel(), arrived.astype(np.float64).ravel()
        dot, delta_sq, arrived_sq = float(delta @ arrived), float(delta @ delta), float(arrived @ arrived)
        for key, value in (("dot", dot), ("delta_sq", delta_sq), ("arrived_sq", arrived_sq),
                           ("base_error_sq", float(np.sum(base_error.astype(np.float64) ** 2)))):
            self.totals[key] += value
        self.per_matrix.append(self._shape(dot, delta_sq, arrived_sq)[1:])

    @staticmethod
    def _shape(dot: float, delta_sq: float, arrived_sq: float) -> tuple[float, float, float]:
        gain = dot / delta_sq
        residual_sq = arrived_sq - 2 * gain * dot + gain**2 * delta_sq
        return gain, dot / np.sqrt(delta_sq * arrived_sq), float(np.sqrt(max(residual_sq, 0.0) / delta_sq))

    def summary(self) -> dict:
        t = self.totals
        gain, cosine, residual = self._shape(t["dot"], t["delta_sq"], t["arrived_sq"])
        cosines, residuals = zip(*self.per_matrix)
        return {"gain": round(gain, 4), "cosine": round(float(cosine), 4), "residual_over_adapter": round(residual, 4),
                "cosine_range_over_matrices": [round(float(min(cosines)), 4), round(float(max(cosines)), 4)],
                "residual_range_over_matrices": [round(min(residuals), 4), round(max(residuals), 4)],
                "base_rounding_error_over_adapter": round(float(np.sqrt(t["base_error_sq"] / t["delta_sq"])), 4)}


def bf16_rounded(weights: np.ndarray) -> np.ndarray:
    """float32 -> bf16 (round to nearest even, as torch casts a model's weights) -> float32."""
    import torch

    return torch.from_numpy(weights).to(torch.bfloat16).float().numpy()


def rounding(model_folder: Path, base_ir: Int8Weights, merged_ir: Int8Weights, deltas: dict[str, np.ndarray]) -> dict:
    from safetensors import safe_open

    int8, bf16 = Arrival(), Arrival()
    steps, changed, elements = [], 0, 0
    with safe_open(model_folder / "model.safetensors", "np") as base:
        for name, delta in deltas.items():
            weight = base.get_tensor(name).astype(np.float32)
            base_int8 = base_ir[name]
            int8.add(delta, merged_ir[name] - base_int8, base_int8 - weight)
            steps.append(np.median(np.abs(delta) / base_ir.step(name)))
            changed += int(np.count_nonzero(merged_ir.codes(name) != base_ir.codes(name)))
            elements += delta.size
            base_bf16 = bf16_rounded(weight)
            bf16.add(delta, bf16_rounded(weight + delta) - base_bf16, base_bf16 - weight)
    return {"matrices": len(deltas), "elements": elements,
            "int8": {**int8.summary(), "adapter_in_int8_steps_median": round(float(np.median(steps)), 4),
                     "int8_codes_changed": round(changed / elements, 4)},
            "bf16": bf16.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("adapters", nargs="+", type=Path)
    parser.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model_folder = local_model_folder(ModelConfig(name_or_path=args.model))
    base_ir = Int8Weights(export_openvino(model_folder, default_cache_dir(), "int8"))
    result = {"command": "python " + " ".join(sys.argv), "machine": machine_info(), "model": args.model,
              "weight_format": "int8", "adapters": {}}
    for adapter in args.adapters:
        merged_ir = Int8Weights(export_openvino(model_folder, default_cache_dir(), "int8", adapter))
        result["adapters"][str(adapter)] = rounding(model_folder, base_ir, merged_ir, adapter_deltas(adapter))
        print(adapter, json.dumps(result["adapters"][str(adapter)]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
