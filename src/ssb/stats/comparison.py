"""Arms and paired comparisons for ``ssb report``: pooled training seeds, A minus B, Holm's adjustment.

Models are the evaluated models of one or more run folders (``eval/<model>/``). A model's name is
its label in the report when only one folder evaluated a model of that name; when two did, each is
labelled ``FOLDER/MODEL`` (the run folder's directory name), and a bare name that could mean either
is refused with both folders named. ``FOLDER/MODEL`` is always accepted.

An arm is one or more models, typically one recipe trained with several seeds. Per question, a
model scores the fraction of its samples graded correct and the arm scores the mean of its models'
scores, so each seed weighs the same and the question stays the unit of every interval: the arm's
pass@1 is the mean over questions, its 95% CI the normal approximation over those per-question
means (``mean_with_ci(binary=False)``; Wilson's interval, as in the evaluation summary, for an arm
of one model with one sample per question). An arm is scored on the questions every one of its
models answered, and so is each model's pass@1 listed beside it, which makes the arm's pass@1 the
mean of its models' values.

``A:B`` is the mean of A's minus B's per-question scores on the questions both answered, with the
paired 95% CI over questions (``metrics.paired_difference``). Its p-value is the exact two-sided
sign test over the questions where the two scores differ, counted by which side is higher; when
each arm is one model with one sample per question this is McNemar's exact test. For pooled arms
it ignores how far apart the scores are (a question 2/3 vs 1/3 counts as one win like 1 vs 0), which
keeps it valid without assuming anything about the distribution of the differences, as long as both
sides average their samples alike (the same samples per model). Otherwise an average and a single
0/1 score are not exchangeable and the sign test is biased; the p-value is then the normal (z) test
of the mean difference, an approximation for hundreds of questions, not a handful. Several
comparisons are one family: ``holm`` adjusts their p-values for it.

Beside each interval over questions, an arm of several models (training runs) and a difference with such an arm on either
side get the two-level bootstrap's interval (``ssb.stats.bootstrap``: runs within each arm, then questions), under
``ci95_runs``; it is None for an arm of one model (or two such arms), where it would be the question-level interval
again. A declared analysis plan (``ssb.stats.analysis_plan``) may fix the test for every comparison instead: ``test`` of
``compare_arms`` is then ``sign``, ``z`` or ``bootstrap`` (the bootstrap's two-sided p-value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ssb.stats.bootstrap import RESAMPLES, SEED, interval, resample, two_sided_p
from ssb.stats.metrics import mean_with_ci, paired_difference


def model_labels(found: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(run folder, model) -> its label: the model's name, or ``FOLDER/MODEL`` where two folders share the name."""
    names = [Path(folder).name for folder, _ in found]
    folders = {}
    for (folder, _), name in zip(found, names):
        if folders.setdefault(name, folder) != folder:
            raise ValueError(f"two run folders are both named {name!r} ({folders[name]} and {folder}); models are told apart by folder name")
    repeated = {model for _, model in found if sum(m == model for _, m in found) > 1}
    return {(folder, model): f"{name}/{model}" if model in repeated else model for (folder, model), name in zip(found, names)}


def resolve(name: str, labels: Mapping[tuple[str, str], str]) -> str:
    """The label a user's model name refers to: a label itself, or ``FOLDER/MODEL``; ambiguous names are refused."""
    if name in labels.values():
        return name
    matches = [(folder, model) for folder, model in labels if model == name or f"{Path(folder).name}/{model}" == name]
    if len(matches) > 1:
        folders = " and ".join(folder for folder, _ in matches)
        qualified = " or ".join(f"{Path(folder).name}/{name}" for folder, _ in matches)
        raise ValueError(f"model {name!r} is evaluated in both {folders}; name it as {qualified}")
    if not matches:
        raise ValueError(f"no evaluated model {name!r} (known: {', '.join(sorted(labels.values()))})")
    return labels[matches[0]]


def parse_arms(specs: Sequence[str], labels: Mapping[tuple[str, str], str]) -> dict[str, list[str]]:
    """``NAME=MODEL[,MODEL...]`` -> {arm: [model labels]}; every model named in no arm is an arm of its own."""
    arms: dict[str, list[str]] = {}
    for spec in specs:
        name, _, models = spec.partition("=")
        members = [resolve(m.strip(), labels) for m in models.split(",") if m.strip()]
        if not name or ":" in name or not members:
            raise ValueError(f"--arm {spec!r}: expected NAME=MODEL[,MODEL...], NAME without ':'")
        if name in arms:
            raise ValueError(f"--arm {name!r} is given twice")
        for member in members:
            owner = next((arm for arm, ms in arms.items() if member in ms), None)
            if owner is not None or members.count(member) > 1:
                raise ValueError(f"model {member!r} is named twice in --arm ({owner or name})")
        arms[name] = members
    for label in labels.values():
        if label in arms and label not in arms[label]:
            raise ValueError(f"arm {label!r} has the name of a model outside it; choose another arm name")
        if not any(label in ms for ms in arms.values()):
            arms[label] = [label]
    return arms


def parse_comparisons(specs: Sequence[str], arms: Mapping[str, list[str]], labels: Mapping[tuple[str, str], str]) -> list[tuple[str, str]]:
    """``A:B`` -> (A, B): each an arm, or a model (an arm of its own) by any name ``resolve`` accepts."""
    out = []
    for spec in specs:
        a, sep, b = spec.partition(":")
        if not sep or not a or not b:
            raise ValueError(f"--compare {spec!r}: expected A:B")
        pair = tuple(name if name in arms else resolve(name, labels) for name in (a, b))
        for name in pair:
            if name not in arms:
                owner = next(arm for arm, members in arms.items() if name in members)
                raise ValueError(f"--compare {spec!r}: model {name!r} is pooled in arm {owner!r}; compare the arm")
        if pair[0] == pair[1]:
            raise ValueError(f"--compare {spec!r}: an arm compared with itself")
        out.append(pair)
    return out


def pool(scores_by_model: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """{question: mean of the models' scores} on the questions every model answered."""
    if not scores_by_model:
        return {}
    common = set.intersection(*(set(s) for s in scores_by_model))
    return {q: sum(s[q] for s in scores_by_model) / len(scores_by_model) for q in sorted(common)}


def score_matrix(scores_by_model: Mapping[str, Mapping[str, float]], questions: Sequence[str]) -> list[list[float]]:
    """One row per model, one column per question: the runs x questions layout of ``ssb.stats.bootstrap``."""
    return [[scores[q] for q in questions] for scores in scores_by_model.values()]


def arm_pass_at_1(scores_by_model: Mapping[str, Mapping[str, float]], binary: bool, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """An arm's pass@1 with its 95% CI over questions, its CI over runs and questions (None for one model), and each
    model's pass@1 on the same questions.

    ``binary`` asks for Wilson's interval: right only for one model with one sample per question.
    """
    pooled = pool(list(scores_by_model.values()))
    per_model = {m: sum(s[q] for q in pooled) / len(pooled) if pooled else 0.0 for m, s in scores_by_model.items()}
    runs = interval(resample(score_matrix(scores_by_model, list(pooled)), resamples=resamples, seed=seed)) if len(scores_by_model) > 1 else None
    return {**mean_with_ci(list(pooled.values()), binary=binary), "ci95_runs": runs, "per_model": per_model}


def compare(a: Mapping[str, float], b: Mapping[str, float], samples: tuple[Sequence[int], Sequence[int]] | None = None) -> dict:
    """A minus B on the questions both scored: ``metrics.paired_difference`` (mean, CI, better/worse, p).

    ``samples``: each side's samples per question of each of its models (its per-question score is the
    mean over models of each model's fraction correct). The sign test needs both sides to average
    alike, the same list up to order; otherwise the z test is used.
    """
    common = sorted(a.keys() & b.keys())
    test = "sign" if samples is None or sorted(samples[0]) == sorted(samples[1]) else "z"
    return paired_difference([a[q] for q in common], [b[q] for q in common], test=test)


def compare_arms(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]],
                 samples: tuple[Sequence[int], Sequence[int]] | None = None, test: str | None = None,
                 resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Arm A minus arm B ({model: per-question scores} each): ``compare`` on the pooled scores, with ``ci95_runs``.

    ``test`` None chooses as ``compare`` does (sign, or z where the sides average unlike); ``sign`` or ``z`` applies that
    test; ``bootstrap`` gives the two-level bootstrap's two-sided p-value (one model a side: the bootstrap over questions).
    """
    pooled_a, pooled_b = pool(list(a.values())), pool(list(b.values()))
    common = sorted(pooled_a.keys() & pooled_b.keys())
    if test is None:
        d = compare(pooled_a, pooled_b, samples)
    else:  # the bootstrap's row keeps the z test's mean, standard error and interval over questions; its p is replaced below
        d = paired_difference([pooled_a[q] for q in common], [pooled_b[q] for q in common], test="z" if test == "bootstrap" else test)
    several = len(a) > 1 or len(b) > 1
    statistic = resample(score_matrix(a, common), score_matrix(b, common), resamples=resamples, seed=seed) if several or test == "bootstrap" else None
    if test == "bootstrap":
        d = {**d, "p_value": two_sided_p(statistic), "test": "bootstrap"}
    return {**d, "ci95_runs": interval(statistic) if several else None}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the family-wise error rate over all of them."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def format_p(p: float) -> str:
    return "<0.001" if p < 0.001 else format(p, ".3f")
