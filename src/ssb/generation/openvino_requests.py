"""One call's requests to an OpenVINO GenAI ``ContinuousBatchingPipeline``: their ``GenerationConfig`` and the loop that
steps the pipeline until every one has finished. Evaluation (``openvino``) and the in-loop sampler (``policy_sampler``)
both generate through here, so the two engines seed, stop and sample alike.

Seeding: request ``i`` of a call samples with ``derive_seed(params.seed, i)`` and its ``params.n`` samples are that
request's ``num_return_sequences``, so the same call reproduces the same samples whatever else is scheduled beside it.
Greedy decoding asks for one sequence per prompt and repeats it ``n`` times (all greedy samples are equal).
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from ssb.generation.base import SamplingParams, derive_seed


def generation_config(og, params: SamplingParams, stop_ids: Sequence[int], request: int, logprobs: bool = False, adapters=None):
    """The ``og.GenerationConfig`` of request ``request`` of a call with ``params``.

    ``og``: the ``openvino_genai`` module. ``stop_ids``: the chat format's stop ids, the last one the eos.
    ``logprobs``: ask for each generated token's log-probability (``logprobs = 1``). ``adapters``: an ``og.AdapterConfig`` to sample with.
    """
    config = og.GenerationConfig()
    config.max_new_tokens = params.max_new_tokens
    config.stop_token_ids = set(stop_ids)
    config.eos_token_id = stop_ids[-1]
    # No logit processor beyond temperature / top-k / top-p: the samples are those of the transformers reference, and the
    # reported log-probabilities those of the distribution sampled at temperature 1, which importance sampling
    # (grpo.importance_sampling) relies on.
    config.repetition_penalty, config.presence_penalty, config.frequency_penalty, config.min_new_tokens = 1.0, 0.0, 0.0, 0
    if logprobs:
        config.logprobs = 1
    if adapters is not None:
        config.adapters = adapters
    if params.temperature == 0:
        config.do_sample = False
        config.num_return_sequences = 1
        return config
    config.do_sample = True
    config.temperature, config.top_p = params.temperature, params.top_p
    if params.top_k > 0:
        config.top_k = params.top_k
    config.num_return_sequences = params.n
    config.rng_seed = derive_seed(params.seed, request)
    return config


def run_requests(pipeline, prompt_ids: list[list[int]], params: SamplingParams, configs: list,
                 progress: bool = False) -> list[list[tuple[list[int], list[float]]]]:
    """Queue one request per tokenized prompt (request ``i`` with ``configs[i]``), step ``pipeline`` until all have
    finished, and return each prompt's ``params.n`` samples as (generated ids, their log-probabilities), in prompt order.

    The ids include the stop token where a sample stopped on one; the log-probabilities are those the engine reported with
    each id (the in-loop sampler asks for them with ``logprobs``). ``progress``: a tqdm bar over generated tokens.
    """
    import numpy as np
    import openvino as ov

    handles = [pipeline.add_request(i, ov.Tensor(np.array([ids], dtype=np.int64)), config)
               for i, (ids, config) in enumerate(zip(prompt_ids, configs, strict=True))]
    generated: list[dict[int, tuple[list[int], list[float]]]] = [{} for _ in prompt_ids]  # request -> sequence -> (ids, logprobs)
    bar = tqdm(total=len(prompt_ids) * params.n * params.max_new_tokens, desc="generate", unit="tok", disable=not progress, leave=False)
    while pipeline.has_non_finished_requests():
        pipeline.step()
        for i, handle in enumerate(handles):
            while handle.can_read():
                for sequence, output in handle.read().items():
                    ids, logprobs = generated[i].setdefault(sequence, ([], []))
                    ids.extend(output.generated_ids)
                    logprobs.extend(output.generated_log_probs)
                    bar.update(len(output.generated_ids))
    bar.close()
    results = []
    for sequences in generated:
        rows = [(list(ids), [float(p) for p in logprobs]) for _, (ids, logprobs) in sorted(sequences.items())]
        if params.temperature == 0:
            rows = rows * params.n
        if len(rows) != params.n:
            raise RuntimeError(f"OpenVINO returned {len(rows)} sequences for a prompt, expected {params.n}")
        results.append(rows)
    return results
