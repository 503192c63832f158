"""A study's declared analysis plan (``ssb report --plan FILE``): its arms, its comparisons and its test, fixed before the runs.

Choosing the test, the comparisons or the family after seeing the results lets the data pick the analysis that looks best.
A plan declares them first, and the report applies them as written. The file is YAML::

    arms:                      # every arm a comparison names, as {name: [model, ...]}; a single model is an arm of one
      ssb: [ssb, ssb-s1, ssb-s2]
      base: [base]
    primary: ["ssb:base"]      # the confirmatory family: A minus B for each, Holm-adjusted together
    secondary: []              # exploratory: reported as such, Holm-adjusted as a family of their own
    test: bootstrap            # sign | z | bootstrap, applied to every comparison
    alpha: 0.05                # a primary comparison is significant when its Holm p is below alpha
    bootstrap: {resamples: 2000, seed: 0}
    benchmarks: [gsm8k]        # optional: the benchmarks compared; default every one both arms were evaluated on
    engine_anchors: [base, base-amx]  # optional: the base model as graded on each engine (below)

``test``: ``sign``, the exact sign test over the questions where the two scores differ (McNemar's test for single models
with one sample per question); ``z``, the normal test of the mean difference; ``bootstrap``, the two-sided p-value of the
two-level bootstrap over runs and questions (``ssb.stats.bootstrap``), which inverts its percentile interval. Each comparison is
made on every benchmark of ``benchmarks`` (or every benchmark both arms were evaluated on), and each such row is one
member of its family. Every error names the file and the field.

``engine_anchors``: models (not arms), each the same reference model (the base) as graded on one evaluation engine. The same
model and settings generate other text on another CPU class, so where the two arms of a comparison were graded on different
engines, their difference includes the engines' own. For every such comparison the report repeats it anchored: each model's
per-question score minus that of the anchor graded on its engine (the same recorded engine numerics, ``engine_anchors.numerics``;
a model whose summary records no engine is anchored on the anchor that records none), so that an engine's effect on the
reference model is subtracted from every model it graded: (A - anchor of A) - (B - anchor of B), which assumes the engine
moves every model's answers as it moved the reference model's. It is the declared sensitivity analysis of those
comparisons, in families of their own (Holm within each); where both arms share one anchor it equals the plain comparison
and is not repeated. A primary comparison that is repeated then counts only where its plain and its anchored row are both
significant with the same sign (the report's "across engines" line). A compared model whose engine has no anchor, two
anchors on one engine, or an anchor not graded on every question of its models is refused, naming what is missing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from ssb.config import ConfigError, UniqueKeyLoader
from ssb.stats.bootstrap import RESAMPLES, SEED

TESTS = ("sign", "z", "bootstrap")
FIELDS = ("arms", "primary", "secondary", "test", "alpha", "bootstrap", "benchmarks", "engine_anchors")
MIN_RESAMPLES = 100  # fewer leave the bootstrap p-value's floor, 2 / (resamples + 1), above any alpha worth declaring


class PlanError(ValueError):
    """An analysis plan that cannot be applied; the message names the file and the field."""


@dataclass(frozen=True)
class AnalysisPlan:
    path: Path
    sha256: str
    arms: dict[str, list[str]]  # arm -> its models, as the plan names them
    primary: list[tuple[str, str]]  # (A, B): A minus B
    secondary: list[tuple[str, str]]
    test: str
    alpha: float
    resamples: int
    seed: int
    benchmarks: list[str] | None  # None: every benchmark both arms were evaluated on
    engine_anchors: tuple[str, ...] = ()  # models: the reference model as graded on each engine


def _strings(value, where: str, path: Path) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise PlanError(f"{path}: {where}: expected a non-empty list of names")
    return [v.strip() for v in value]


def _arms(value, path: Path) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not value:
        raise PlanError(f"{path}: arms: expected a mapping of arm names to lists of models")
    arms, owner = {}, {}
    for name, models in value.items():
        if not isinstance(name, str) or not name or ":" in name:
            raise PlanError(f"{path}: arms: {name!r}: an arm's name must be a non-empty string without ':'")
        arms[name] = _strings(models, f"arms.{name}", path)
        for model in arms[name]:
            if model in owner:
                raise PlanError(f"{path}: arms.{name}: model {model!r} is already in arm {owner[model]!r}")
            owner[model] = name
    return arms


def _comparisons(value, field: str, arms: dict[str, list[str]], path: Path) -> list[tuple[str, str]]:
    pairs = []
    for spec in _strings(value, field, path):
        a, sep, b = spec.partition(":")
        if not sep or not a.strip() or not b.strip():
            raise PlanError(f"{path}: {field}: {spec!r}: expected 'A:B'")
        pair = (a.strip(), b.strip())
        for name in pair:
            if name not in arms:
                raise PlanError(f"{path}: {field}: {spec!r}: unknown arm {name!r} (declared: {', '.join(arms)})")
        if pair[0] == pair[1]:
            raise PlanError(f"{path}: {field}: {spec!r}: an arm compared with itself")
        pairs.append(pair)
    return pairs


def _bootstrap(value, path: Path) -> tuple[int, int]:
    value = {} if value is None else value
    if not isinstance(value, dict) or set(value) - {"resamples", "seed"}:
        raise PlanError(f"{path}: bootstrap: expected a mapping with resamples and seed only")
    resamples, seed = value.get("resamples", RESAMPLES), value.get("seed", SEED)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < MIN_RESAMPLES:
        raise PlanError(f"{path}: bootstrap.resamples: expected an integer >= {MIN_RESAMPLES}, got {resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PlanError(f"{path}: bootstrap.seed: expected an integer >= 0, got {seed!r}")
    return resamples, seed


def load_plan(path: str | Path) -> AnalysisPlan:
    """Read and check a plan file; raises PlanError naming the file and the field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        tree = yaml.load(raw.decode("utf-8"), Loader=UniqueKeyLoader)
    except FileNotFoundError:
        raise PlanError(f"{path}: analysis plan not found") from None
    except UnicodeDecodeError as exc:
        raise PlanError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except (ConfigError, yaml.YAMLError) as exc:
        raise PlanError(f"{path}: not a valid plan: {exc}") from None
    except RecursionError:  # PyYAML composes and constructs a nest by recursion: a few hundred levels exhaust Python's stack
        raise PlanError(f"{path}: nested too deep") from None
    if not isinstance(tree, dict):
        raise PlanError(f"{path}: the top level must be a mapping with the fields {', '.join(FIELDS)}")
    unknown = sorted(str(key) for key in tree if key not in FIELDS)
    if unknown:
        raise PlanError(f"{path}: unknown field {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    for field in ("arms", "primary", "test"):
        if field not in tree:
            raise PlanError(f"{path}: {field}: missing; a plan declares its arms, its primary comparisons and its test")
    arms = _arms(tree["arms"], path)
    primary = _comparisons(tree["primary"], "primary", arms, path)
    secondary = _comparisons(tree["secondary"], "secondary", arms, path) if tree.get("secondary") else []
    seen = set()
    for field, pairs in (("primary", primary), ("secondary", secondary)):
        for a, b in pairs:
            if (a, b) in seen or (b, a) in seen:
                raise PlanError(f"{path}: {field}: '{a}:{b}' is declared twice (or both ways)")
            seen.add((a, b))
    if tree["test"] not in TESTS:
        raise PlanError(f"{path}: test: unknown test {tree['test']!r} (one of {', '.join(TESTS)})")
    alpha = tree.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise PlanError(f"{path}: alpha: expected a number between 0 and 1, got {alpha!r}")
    resamples, seed = _bootstrap(tree.get("bootstrap"), path)
    benchmarks = _strings(tree["benchmarks"], "benchmarks", path) if "benchmarks" in tree else None
    anchors = _strings(tree["engine_anchors"], "engine_anchors", path) if "engine_anchors" in tree else []
    if len(set(anchors)) != len(anchors):
        raise PlanError(f"{path}: engine_anchors: a model is listed twice")
    return AnalysisPlan(path=path, sha256=hashlib.sha256(raw).hexdigest(), arms=arms, primary=primary, secondary=secondary,
                        test=tree["test"], alpha=float(alpha), resamples=resamples, seed=seed, benchmarks=benchmarks,
                        engine_anchors=tuple(anchors))
