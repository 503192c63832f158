"""How much of a LoRA adapter survives the int8 weights that adapter evaluations generate with?

``ssb eval --eval.adapters`` on the OpenVINO backend merges the adapter into the float32 base (PEFT)
and compresses the merged model to int8 weights (asymmetric, one scale per output channel). An
adapter's change to a weight can be smaller than one int8 step, so this compares, for every
LoRA-targeted matrix, the change the adapter asks for (dW = B A * alpha / r, in float32) with the
change that reaches the int8 model (D = dequantised merged IR - dequantised base IR):

- gain: <D, dW> / |dW|^2, the share of the adapter's direction that arrives (1 = all of it);
- cosine(D, dW) and the residual |D - gain dW| / |dW| (rounding noise the merge adds);
- |dW| in int8 steps (median over elements) and the share of int8 codes the merge changed;
- the base model's own int8 rounding error |deq(base IR) - W| / |dW|, for scale.

Reads the cached IRs (exports them first if they are missing, which takes a minute each):
    python benchmarks/int8_adapter_fidelity.py runs/evidence-ssb/distill/adapter [more adapters] \
        --out benchmarks/results/evidence/int8_adapter_fidelity.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ssb.config import ModelConfig
from ssb.generation.openvino_export import export_openvino
from ssb.models import local_model_folder
from ssb.packaged_models import default_cache_dir

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402


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


def fidelity(model_folder: Path, base_ir: Int8Weights, merged_ir: Int8Weights,
             deltas: dict[str, np.ndarray]) -> dict:
    from safetensors import safe_open

    totals = dict.fromkeys(("dot", "delta_sq", "arrived_sq", "base_error_sq"), 0.0)
    steps, changed, elements = [], 0, 0
    with safe_open(model_folder / "model.safetensors", "np") as base:
        for name, delta in deltas.items():
            base_int8 = base_ir[name]
            arrived = merged_ir[name] - base_int8
            weight = base.get_tensor(name).astype(np.float32)
            steps.append(np.median(np.abs(delta) / base_ir.step(name)))
            changed += int(np.count_nonzero(merged_ir.codes(name) != base_ir.codes(name)))
            elements += delta.size
            totals["dot"] += float(np.vdot(arrived.astype(np.float64), delta.astype(np.float64)))
            totals["delta_sq"] += float(np.sum(delta.astype(np.float64) ** 2))
            totals["arrived_sq"] += float(np.sum(arrived.astype(np.float64) ** 2))
            totals["base_error_sq"] += float(np.sum((base_int8 - weight).astype(np.float64) ** 2))
    gain = totals["dot"] / totals["delta_sq"]
    residual_sq = totals["arrived_sq"] - 2 * gain * totals["dot"] + gain**2 * totals["delta_sq"]
    return {"matrices": len(deltas), "elements": elements, "gain": round(gain, 4),
            "cosine": round(totals["dot"] / np.sqrt(totals["delta_sq"] * totals["arrived_sq"]), 4),
            "residual_over_adapter": round(float(np.sqrt(max(residual_sq, 0.0) / totals["delta_sq"])), 4),
            "adapter_in_int8_steps_median": round(float(np.median(steps)), 4),
            "int8_codes_changed": round(changed / elements, 4),
            "base_int8_error_over_adapter": round(float(np.sqrt(totals["base_error_sq"] / totals["delta_sq"])), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("adapters", nargs="+", type=Path)
    parser.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--weight-format", default="int8")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model_folder = local_model_folder(ModelConfig(name_or_path=args.model))
    base_ir = Int8Weights(export_openvino(model_folder, default_cache_dir(), args.weight_format))
    result = {"command": "python " + " ".join(sys.argv), "machine": machine_info(), "model": args.model,
              "weight_format": args.weight_format, "adapters": {}}
    for adapter in args.adapters:
        merged_ir = Int8Weights(export_openvino(model_folder, default_cache_dir(), args.weight_format, adapter))
        result["adapters"][str(adapter)] = fidelity(model_folder, base_ir, merged_ir, adapter_deltas(adapter))
        print(adapter, json.dumps(result["adapters"][str(adapter)]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
