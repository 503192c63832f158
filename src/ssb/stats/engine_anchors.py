"""Evaluation engines in the report: what of an engine decides its numerics, and scores anchored on each engine's base.

Greedy text depends on the engine as well as the model: the backend's weight format and precision, the device, and the
CPU's kernel flags (a CPU with AMX runs other kernels than one with avx512_bf16 alone, and their rounding differs). So
the same model graded on two engines differs on some questions, and a difference between models graded on different
engines includes the engines' own. Where a study's arms were graded on more than one engine, its plan may name the
reference model as graded on each (``engine_anchors``, ``ssb.stats.analysis_plan``): every model's per-question score minus
its engine's anchor's then takes each engine's effect on the reference model out of every model it graded, on the
assumption that the engine shifts every model's answers as it shifted the reference model's (it moves individual answers,
so this holds on average at best; the anchored rows are a sensitivity analysis beside the plain ones, not a correction).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

UNRECORDED = "null"  # the key of evaluations whose summary records no engine (written before engines were recorded)


def numerics(engine: dict) -> dict:
    """What of an evaluation's engine decides its numerics: the backend's format and precision, the device, the CPU's
    kernel flags (not the KV cache's size, nor the CPU's model name where its flags are the same)."""
    backend = {k: v for k, v in engine.get("backend", {}).items() if k != "kv_cache_gb"}
    return {"backend": backend, "device": engine.get("device"), "kernel_flags": (engine.get("cpu") or {}).get("kernel_flags")}


def engine_key(summary: dict) -> str:
    """One evaluation's engine as a comparable string: its numerics, or ``UNRECORDED``."""
    return json.dumps(numerics(summary["engine"]), sort_keys=True) if "engine" in summary else UNRECORDED


def anchor_of(anchors: Sequence[str], summaries: Mapping[str, Mapping[str, dict]]):
    """``anchor(model, benchmark)``: the anchor graded on the engine that graded ``model`` on ``benchmark``.

    Two anchors on one engine, or a model on an engine no anchor was graded on, raise ValueError naming the models and
    the engine."""
    def anchor(model: str, benchmark: str) -> str:
        key = engine_key(summaries[model][benchmark])
        found = [a for a in anchors if benchmark in summaries[a] and engine_key(summaries[a][benchmark]) == key]
        if len(found) > 1:
            raise ValueError(f"{' and '.join(found)} were both graded on {benchmark} by one engine; an engine has one anchor")
        if not found:
            engine = "an engine not recorded" if key == UNRECORDED else f"engine {key}"
            raise ValueError(f"no anchor was graded on {benchmark} by the engine that graded {model} ({engine}); "
                             "grade the reference model there and list it")
        return found[0]

    return anchor


def anchored(scores: Mapping[str, float], anchor_scores: Mapping[str, float], model: str, anchor: str, benchmark: str) -> dict[str, float]:
    """{question: the model's score minus its anchor's} (each in [-1, 1]). An anchor that lacks any of the model's
    questions raises ValueError: the anchored row would rest on fewer questions than the plain one, silently."""
    missing = scores.keys() - anchor_scores.keys()
    if missing:
        raise ValueError(f"{anchor}, the anchor of {model} on {benchmark}, was not graded on {len(missing)} of its {len(scores)} "
                         f"questions (e.g. {sorted(missing)[0]}); an anchor is graded on every question its models were")
    return {q: s - anchor_scores[q] for q, s in scores.items()}
