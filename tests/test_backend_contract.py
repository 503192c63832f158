"""The contract every generation backend keeps, run on each backend that imports here.

hf (transformers generate) is the reference; openvino runs with exact (fp32) weights and f32
activations so that its greedy output can be compared token for token; vllm runs where it imports
and a GPU is present. Each backend is built the way the stages build it (``make_backend`` from a
config), on a tiny random Qwen2 model saved as a model folder.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from ssb.chat import messages
from ssb.config import load_config
from ssb.generation import SamplingParams, make_backend, overflow
from ssb.models import load_chat_format
from tiny import byte_tokenizer, greedy_reference, tiny_qwen2

PROMPTS = [messages("sys", "What is 1+1?"), messages("sys", "A much longer question, with more words in it?"), messages("s", "Hi")]
BACKENDS = [
    "hf",
    pytest.param("openvino", marks=pytest.mark.skipif(not importlib.util.find_spec("openvino_genai"), reason="openvino-genai not installed")),
    pytest.param("vllm", marks=pytest.mark.skipif(not (importlib.util.find_spec("vllm") and torch.cuda.is_available()),
                                                  reason="vllm needs a GPU and the vllm package")),
]


def save_model(folder, favour: str | None = None):
    """A tiny model folder whose generation config stops on <|im_end|> and <|endoftext|>.

    ``favour``: a token the output head prefers at every position (to test stopping on it).
    """
    tokenizer = byte_tokenizer()
    model = tiny_qwen2(len(tokenizer))
    stops = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    model.generation_config.eos_token_id = stops
    if favour is not None:
        # Layers add nothing to the residual stream, every embedding has a large positive first
        # coordinate, and only ``favour``'s head row reads it: ``favour`` wins at every position by a
        # margin no precision or sampling temperature below 1 can overturn.
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            model.model.embed_tokens.weight[:, 0] = 10.0
            model.lm_head.weight.zero_()
            model.lm_head.weight[tokenizer.convert_tokens_to_ids(favour), 0] = 10.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make(name, folder, tmp_path_factory):
    overrides = {"model.name_or_path": str(folder), "backend.name": name, "progress": False, "backend.batch_size": 4,
                 "backend.openvino.weight_format": "fp32", "backend.openvino.inference_precision": "f32",
                 "backend.openvino.kv_cache_gb": 1, "model.dtype": "float32",
                 "run_dir": str(tmp_path_factory.mktemp("run"))}
    config = load_config(None, overrides)
    return make_backend(config, load_chat_format(config.model))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("contract-model"))


@pytest.fixture(scope="module")
def adapter_dir(model_dir, tmp_path_factory):
    """A LoRA adapter whose B matrices are not zero, so it changes what the model generates."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), lora)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory):
    return make("hf", model_dir, tmp_path_factory)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, model_dir, tmp_path_factory):
    made = make(request.param, model_dir, tmp_path_factory)
    yield made
    made.close()  # the engine's threads and caches go with it, before other test modules run


def test_completions_are_well_formed(backend):
    params = SamplingParams(n=3, temperature=1.0, top_k=20, max_new_tokens=9, seed=3)
    out = backend.generate(PROMPTS, params)
    assert [len(row) for row in out] == [3, 3, 3]
    for row in out:
        for c in row:
            assert c.finish_reason in ("stop", "length")
            assert c.num_tokens == len(c.token_ids) + (c.finish_reason == "stop") <= 9
            assert c.finish_reason == "stop" or c.num_tokens == 9
            assert not set(c.token_ids) & set(backend.chat.stop_ids)
            assert c.text == backend.chat.tokenizer.decode(c.token_ids, skip_special_tokens=True)


def test_greedy_matches_the_reference(backend, reference):
    if backend.__class__ is reference.__class__:
        pytest.skip("hf is the reference (held to a token-by-token argmax loop in test_hf_backend.py)")
    params = SamplingParams(n=2, temperature=0, max_new_tokens=12)
    expected = reference.generate(PROMPTS, params)
    got = backend.generate(PROMPTS, params)
    assert [[c.token_ids for c in row] for row in got] == [[c.token_ids for c in row] for row in expected]
    assert any(c.token_ids for row in got for c in row)


def test_sampling_is_seeded_per_call(backend):
    params = SamplingParams(n=3, temperature=1.0, top_k=0, max_new_tokens=10, seed=5)
    first, again = backend.generate(PROMPTS, params), backend.generate(PROMPTS, params)
    assert first == again
    other = backend.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, top_k=0, max_new_tokens=10, seed=6))
    assert other != first
    assert len({tuple(c.token_ids) for c in first[0]}) > 1  # samples of one prompt differ


def test_context_length_is_the_models_and_overlong_prompts_are_refused(backend):
    assert backend.context_length == 4096
    assert overflow(backend.chat, PROMPTS[0], 4096, backend.context_length) is not None
    assert overflow(backend.chat, PROMPTS[0], 16, backend.context_length) is None


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("stop", ["<|im_end|>", "<|endoftext|>"])
def test_stops_on_end_of_turn_and_on_the_generation_configs_eos(name, stop, tmp_path_factory):
    folder = save_model(tmp_path_factory.mktemp("stop-model"), favour=stop)
    backend = make(name, folder, tmp_path_factory)
    for params in (SamplingParams(n=2, temperature=0, max_new_tokens=8), SamplingParams(n=2, temperature=0.5, max_new_tokens=8, seed=1)):
        for row in backend.generate(PROMPTS[:2], params):
            for c in row:
                assert (c.finish_reason, c.token_ids, c.text, c.num_tokens) == ("stop", [], "", 1)
    backend.close()


def test_adapter_changes_output_like_peft_and_close_restores_the_base(backend, model_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    params = SamplingParams(n=1, temperature=0, max_new_tokens=12)
    base = backend.generate(PROMPTS, params)
    adapted = backend.with_adapter(adapter_dir)
    with_adapter = adapted.generate(PROMPTS, params)
    adapted.close()
    assert with_adapter != base
    # PEFT's own model, decoded by a plain argmax loop (not through any backend, hf's included).
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter_dir).eval()
    expected = [greedy_reference(peft, backend.chat.tokenizer, prompt, 12)["token_ids"] for prompt in PROMPTS]
    assert [[c.token_ids for c in row] for row in with_adapter] == [[ids] for ids in expected]
    assert backend.generate(PROMPTS, params) == base


def test_openvino_compiles_a_model_only_when_it_generates(model_dir, adapter_dir, tmp_path_factory, monkeypatch):
    """An evaluation of adapters alone never compiles the base model (nor reserves its KV cache)."""
    og = pytest.importorskip("openvino_genai")
    compiled, real = [], og.ContinuousBatchingPipeline

    def counting(path, *args):
        compiled.append(Path(path))
        return real(path, *args)

    monkeypatch.setattr(og, "ContinuousBatchingPipeline", counting)
    base = make("openvino", model_dir, tmp_path_factory)
    adapted = base.with_adapter(adapter_dir)
    assert compiled == []
    adapted.generate(PROMPTS[:1], SamplingParams(n=1, temperature=0, max_new_tokens=4))
    adapted.generate(PROMPTS[:1], SamplingParams(n=1, temperature=0, max_new_tokens=4))
    assert compiled == [adapted.model_dir] and adapted.model_dir != base.model_dir
    adapted.close()
