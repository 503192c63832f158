"""The OpenVINO request shape that evaluation and the in-loop sampler share: how ssb's SamplingParams become an
``openvino_genai.GenerationConfig``, and how a call's requests are stepped and read back (on a scripted pipeline)."""

import hashlib
import importlib.util

import pytest

from ssb.generation import SamplingParams
from test_imports import import_graph, reachable

needs_openvino = pytest.mark.skipif(not importlib.util.find_spec("openvino_genai"), reason="openvino-genai not installed")
STOPS = (5, 9, 2)  # a chat format's stop ids; the last is the eos


def seed_of(call_seed: int, request: int) -> int:
    """derive_seed's formula written out: sha256 of "seed:request", its first 4 bytes little-endian, 31 bits."""
    return int.from_bytes(hashlib.sha256(f"{call_seed}:{request}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def plain(config) -> dict:
    return {"max_new_tokens": config.max_new_tokens, "stop_token_ids": config.stop_token_ids, "eos_token_id": config.eos_token_id,
            "repetition_penalty": config.repetition_penalty, "presence_penalty": config.presence_penalty,
            "frequency_penalty": config.frequency_penalty, "min_new_tokens": config.min_new_tokens, "logprobs": config.logprobs,
            "do_sample": config.do_sample, "num_return_sequences": config.num_return_sequences, "temperature": config.temperature,
            "top_p": config.top_p, "top_k": config.top_k, "rng_seed": config.rng_seed}


@needs_openvino
def test_sampling_params_map_onto_the_generation_config_field_by_field():
    import openvino_genai as og

    from ssb.generation.openvino_requests import generation_config

    defaults = plain(og.GenerationConfig())  # what a field left unset keeps
    common = {"stop_token_ids": {2, 5, 9}, "eos_token_id": 2, "repetition_penalty": 1.0, "presence_penalty": 0.0,
              "frequency_penalty": 0.0, "min_new_tokens": 0, "logprobs": 0}
    sampled = SamplingParams(n=4, temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=33, seed=11)
    assert plain(generation_config(og, sampled, STOPS, 3)) == {
        **defaults, **common, "max_new_tokens": 33, "do_sample": True, "num_return_sequences": 4, "temperature": pytest.approx(0.7),
        "top_p": pytest.approx(0.9), "top_k": 20, "rng_seed": seed_of(11, 3)}
    no_top_k = SamplingParams(n=2, temperature=1.0, top_k=0, max_new_tokens=8, seed=0)
    assert plain(generation_config(og, no_top_k, STOPS, 0)) == {
        **defaults, **common, "max_new_tokens": 8, "do_sample": True, "num_return_sequences": 2, "temperature": 1.0, "top_p": 1.0,
        "rng_seed": seed_of(0, 0)}  # top_k 0 is "off": the engine's own default (no cut) stays
    greedy = SamplingParams(n=5, temperature=0, top_k=20, max_new_tokens=6, seed=11)
    assert plain(generation_config(og, greedy, STOPS, 3)) == {
        **defaults, **common, "max_new_tokens": 6, "do_sample": False, "num_return_sequences": 1}  # one sequence, repeated later
    assert generation_config(og, greedy, STOPS, 0).adapters is None


@needs_openvino
def test_the_sampler_asks_for_logprobs_and_its_adapter(tmp_path):
    import openvino_genai as og
    import torch
    from safetensors.torch import save_file

    from ssb.generation.openvino_requests import generation_config

    name = "base_model.model.model.layers.0.self_attn.q_proj.lora_"
    save_file({name + "A.weight": torch.zeros(2, 8), name + "B.weight": torch.zeros(8, 2)}, str(tmp_path / "lora.safetensors"))
    adapter = og.Adapter(str(tmp_path / "lora.safetensors"))
    config = generation_config(og, SamplingParams(n=2, temperature=1.0, seed=1), STOPS, 1, True, og.AdapterConfig(adapter, 0.25))
    assert config.logprobs == 1 and config.rng_seed == seed_of(1, 1)
    assert len(config.adapters.get_adapters()) == 1 and config.adapters.get_alpha(adapter) == 0.25


class Output:
    def __init__(self, ids):
        self.generated_ids, self.generated_log_probs = ids, [-0.5 * t for t in ids]


class Handle:
    def __init__(self, reads):
        self.reads = reads  # per step: {sequence: new ids}

    def can_read(self):
        return bool(self.reads) and self.reads[0] is not None

    def read(self):
        return {sequence: Output(ids) for sequence, ids in self.reads.pop(0).items()}


class ScriptedPipeline:
    """A pipeline whose requests return scripted chunks: ``script[i]`` lists, per step, what request ``i`` streams."""

    def __init__(self, script):
        self.script, self.handles, self.added = script, [], []

    def add_request(self, request_id, tensor, config):
        self.added.append((request_id, tensor.data.tolist(), config))
        self.handles.append(Handle([]))
        return self.handles[-1]

    def has_non_finished_requests(self):
        return any(self.script[i] for i in range(len(self.handles)))

    def step(self):
        for i, handle in enumerate(self.handles):
            if self.script[i]:
                handle.reads.append(self.script[i].pop(0))


@needs_openvino
def test_a_calls_requests_are_read_back_per_prompt_in_sequence_order():
    from ssb.generation.openvino_requests import run_requests

    # Request 0 streams its two sequences in chunks and out of order; request 1 streams both in one chunk.
    pipeline = ScriptedPipeline([[{1: [7, 8]}, {0: [3], 1: [9]}, {0: [4, 5]}], [{0: [6, 2], 1: [6]}]])
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=3)
    out = run_requests(pipeline, [[1, 2, 3], [4]], params, ["c0", "c1"])
    assert [(i, ids, config) for i, ids, config in pipeline.added] == [(0, [[1, 2, 3]], "c0"), (1, [[4]], "c1")]
    assert out[0] == [([3, 4, 5], [-1.5, -2.0, -2.5]), ([7, 8, 9], [-3.5, -4.0, -4.5])]
    assert out[1] == [([6, 2], [-3.0, -1.0]), ([6], [-3.0])]
    with pytest.raises(RuntimeError, match="returned 1 sequences for a prompt, expected 2"):
        run_requests(ScriptedPipeline([[{0: [1]}]]), [[1]], params, ["c"])


@needs_openvino
def test_greedy_samples_once_per_prompt_and_repeats_it_n_times():
    from ssb.generation.openvino_requests import run_requests

    out = run_requests(ScriptedPipeline([[{0: [3, 5]}], [{0: [4]}]]), [[1], [2]], SamplingParams(n=3, temperature=0), ["c", "c"])
    assert out == [[([3, 5], [-1.5, -2.5])] * 3, [([4], [-2.0])] * 3]


def test_the_training_dtype_choice_does_not_depend_on_the_generation_engines():
    """ssb.models (the torch dtype for training, the CPU facts) imports no generation backend; the OpenVINO precision
    choice reads the CPU facts from there."""
    graph = import_graph()
    assert not {m for m in reachable(graph, "ssb.models") if m.startswith("ssb.generation")}
    assert "ssb.models" in graph["ssb.generation.openvino"]
