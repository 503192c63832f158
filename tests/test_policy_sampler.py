"""The in-loop sampler (OpenVINO runtime LoRA) against transformers on the same PEFT weights, step by step.

The engine runs the tiny model's exact (fp32) export with f32 activations, so its greedy tokens can be
held to a token-by-token argmax loop over the PEFT model's own forward (``tiny.greedy_reference``).
"""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(not importlib.util.find_spec("openvino_genai"), reason="openvino-genai not installed")

from ssb.chat import messages  # noqa: E402
from ssb.config import load_config  # noqa: E402
from ssb.generation import SamplingParams  # noqa: E402
from ssb.models import load_chat_format  # noqa: E402
from tiny import greedy_reference, perturb_lora, save_tiny_model  # noqa: E402

PROMPTS = [messages("sys", "What is 1+1?"), messages("sys", "A longer question, with more words in it?")]
GREEDY = SamplingParams(n=2, temperature=0, max_new_tokens=10)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ssb.generation.policy_sampler import PolicySampler, lora_scaling

    folder = save_tiny_model(tmp_path_factory.mktemp("sampler-model"))
    config = load_config(None, {"model.name_or_path": str(folder), "backend.name": "openvino", "progress": False,
                                "backend.openvino.weight_format": "fp32", "backend.openvino.inference_precision": "f32",
                                "backend.openvino.kv_cache_gb": 1, "backend.batch_size": 4, "run_dir": str(tmp_path_factory.mktemp("run"))})
    chat = load_chat_format(config.model)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), lora).eval()
    perturb_lora(model, seed=1)
    sampler = PolicySampler.from_config(config, chat, lora_scaling(model.peft_config["default"]), lag=0)
    yield model, chat, sampler
    sampler.close()


def reference(model, chat, max_new_tokens=10):
    """The greedy token ids (stop token included when it stopped) of the PEFT model's current weights."""
    rows = []
    for conversation in PROMPTS:
        done = greedy_reference(model, chat.tokenizer, conversation, max_new_tokens)
        stop = [chat.stop_ids[0]] if done["finish_reason"] == "stop" else []
        rows.append(done["token_ids"] + stop)
    return rows


def sampled_ids(sampler, chat, params, step):
    out, sampled = sampler.generate([chat.prompt_ids(p) for p in PROMPTS], params, step)
    return [[s.token_ids for s in row] for row in out], sampled


def optimiser_step(model, seed):
    """One SGD step on the LoRA matrices (the base stays frozen), on a loss that moves them far."""
    optimiser = torch.optim.SGD([p for n, p in model.named_parameters() if "lora_" in n], lr=5.0)
    ids = torch.randint(0, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(seed))
    model(ids, labels=ids).loss.backward()
    optimiser.step()
    optimiser.zero_grad()


def test_lag_zero_samples_the_current_weights_and_follows_an_optimiser_step(setup):
    from ssb.generation.policy_sampler import lora_state

    model, chat, sampler = setup
    sampler.close()
    sampler.lag = 0
    base_rows = None
    with model.disable_adapter():
        base_rows = reference(model, chat)
    sampler.push(0, lora_state(model))
    before = reference(model, chat)
    assert before != base_rows  # the adapter changes what the model writes
    got, sampled = sampled_ids(sampler, chat, GREEDY, step=0)
    assert sampled == 0
    assert got == [[row, row] for row in before]
    base_before = {n: p.clone() for n, p in model.named_parameters() if "lora_" not in n}
    optimiser_step(model, seed=3)
    assert all(torch.equal(p, base_before[n]) for n, p in model.named_parameters() if "lora_" not in n)
    sampler.push(1, lora_state(model))
    after = reference(model, chat)
    assert after != before
    got, sampled = sampled_ids(sampler, chat, GREEDY, step=1)
    assert sampled == 1 and got == [[row, row] for row in after]


def test_with_lag_n_the_samples_are_those_of_the_weights_n_steps_back(setup):
    from ssb.generation.policy_sampler import lora_state

    model, chat, sampler = setup
    sampler.close()
    sampler.lag = 2
    expected = {}
    for step in range(4):
        if step:
            optimiser_step(model, seed=10 + step)
        sampler.push(step, lora_state(model))
        expected[step] = reference(model, chat)
    assert len({str(rows) for rows in expected.values()}) == 4  # every step's weights write something else
    assert sorted(sampler.states) == [1, 2, 3]  # weights no later sampling can use are dropped
    got, sampled = sampled_ids(sampler, chat, GREEDY, step=3)
    assert sampled == 1 and got == [[row, row] for row in expected[1]]
    got, sampled = sampled_ids(sampler, chat, GREEDY, step=2)  # step 0's weights were dropped: the oldest kept
    assert sampled == 1


def test_weights_pushed_steps_apart_keep_the_newest_at_or_before_the_lag(setup):
    """Completions generated every second optimiser step push every second step's weights: with lag 1, step 4 samples
    step 2's (the newest at least one step back), which the push of step 4 must not drop."""
    from ssb.generation.policy_sampler import lora_state

    model, chat, sampler = setup
    sampler.close()
    sampler.lag = 1
    expected = {}
    for step in (0, 2, 4):
        if step:
            optimiser_step(model, seed=20 + step)
        sampler.push(step, lora_state(model))
        expected[step] = reference(model, chat)
    assert expected[2] != expected[4]
    assert sorted(sampler.states) == [2, 4]
    got, sampled = sampled_ids(sampler, chat, GREEDY, step=4)
    assert sampled == 2 and got == [[row, row] for row in expected[2]]


def fresh(sampler, model) -> int:
    """The sampler emptied, with lag 0 and the model's current weights pushed as step 0 (a test of its own, in any order)."""
    from ssb.generation.policy_sampler import lora_state

    sampler.close()
    sampler.lag = 0
    sampler.push(0, lora_state(model))
    return 0


def test_sampling_is_seeded_and_logprobs_come_with_every_token(setup):
    model, chat, sampler = setup
    step = fresh(sampler, model)
    params = SamplingParams(n=3, temperature=1.0, top_k=0, max_new_tokens=8, seed=4)
    first, _ = sampler.generate([chat.prompt_ids(p) for p in PROMPTS], params, step)
    again, _ = sampler.generate([chat.prompt_ids(p) for p in PROMPTS], params, step)
    assert first == again
    other, _ = sampler.generate([chat.prompt_ids(p) for p in PROMPTS], SamplingParams(n=3, temperature=1.0, top_k=0, max_new_tokens=8, seed=5), step)
    assert other != first
    for row in first:
        assert len({tuple(s.token_ids) for s in row}) > 1
        for s in row:
            assert len(s.logprobs) == len(s.token_ids) and all(lp <= 0 for lp in s.logprobs)
            assert s.finish_reason == ("stop" if s.token_ids[-1] in chat.stop_ids else "length")


def test_sampled_logprobs_are_the_models_temperature_one_logprobs(setup):
    """What the engine reports is log softmax of the adapted model's logits at each sampled token (to float noise)."""
    model, chat, sampler = setup
    step = fresh(sampler, model)
    out, _ = sampler.generate([chat.prompt_ids(PROMPTS[0])], SamplingParams(n=1, temperature=0.7, top_k=0, max_new_tokens=8, seed=2), step)
    sample = out[0][0]
    ids = chat.prompt_ids(PROMPTS[0])
    with torch.no_grad():
        logits = model(torch.tensor([ids + sample.token_ids])).logits[0, len(ids) - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(sample.token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(sample.logprobs), expected, atol=1e-2)


def test_a_long_prompt_sampled_again_after_a_swap_is_the_new_weights_own(setup):
    """The same long prompt before and after a weight push: the second answer is the new weights' (with prefix caching,
    the engine would reuse the prompt's KV cached under the previous adapter)."""
    from ssb.generation.policy_sampler import lora_state

    model, chat, sampler = setup
    step = fresh(sampler, model)
    conversation = messages("sys", " ".join(f"word{i % 97} plus {i}" for i in range(200)))
    prompt = [chat.prompt_ids(conversation)]
    assert 2000 < len(prompt[0]) < model.config.max_position_embeddings - 8
    params = SamplingParams(n=1, temperature=0, max_new_tokens=6)

    def expected():
        done = greedy_reference(model, chat.tokenizer, conversation, 6)
        return done["token_ids"] + ([chat.stop_ids[0]] if done["finish_reason"] == "stop" else [])

    before = expected()
    assert [s.token_ids for s in sampler.generate(prompt, params, step)[0][0]] == [before]
    optimiser_step(model, seed=40)
    sampler.push(step + 1, lora_state(model))
    after = expected()
    assert after != before
    assert [s.token_ids for s in sampler.generate(prompt, params, step + 1)[0][0]] == [after]
