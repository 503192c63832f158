import torch

from ssb.chat import ChatFormat, messages
from ssb.generation import SamplingParams
from ssb.generation.hf import HFBackend
from tiny import greedy_reference, recorded, tiny_qwen2

PROMPTS = [messages("sys", "What is 1+1?"), messages("sys", "A much longer question, with more words in it?"), messages("s", "Hi")]


def backend(tokenizer, batch_size=8, model=None):
    return HFBackend(model or tiny_qwen2(len(tokenizer)), ChatFormat(tokenizer), batch_size=batch_size, progress=False)


def test_greedy_batched_or_alone_equals_a_token_by_token_loop(tokenizer):
    """hf is the reference the other backends are held to, so it is held to a plain argmax loop itself."""
    model = tiny_qwen2(len(tokenizer))
    b = backend(tokenizer, batch_size=4, model=model)  # 6 rows: a batch of 4 mixing prompt lengths (left padding), then 2
    params = SamplingParams(n=2, temperature=0, max_new_tokens=12)
    batched = b.generate(PROMPTS, params)
    single = [b.generate([p], params)[0] for p in PROMPTS]
    for prompt, row, alone in zip(PROMPTS, batched, single):
        want = greedy_reference(model, tokenizer, prompt, 12)
        for c in [*row, *alone]:
            assert {"token_ids": c.token_ids, **recorded(vars(c))} == want
    assert all(c.finish_reason == "length" and c.num_tokens == 12 for row in batched for c in row)


def test_sampling_is_seeded_and_shapes_follow_n(tokenizer):
    b = backend(tokenizer, batch_size=4)
    params = SamplingParams(n=3, temperature=1.0, top_k=0, max_new_tokens=10, seed=5)
    first, again = b.generate(PROMPTS, params), b.generate(PROMPTS, params)
    assert [len(row) for row in first] == [3, 3, 3]
    assert first == again
    other = b.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, top_k=0, max_new_tokens=10, seed=6))
    assert other != first
    assert len({tuple(c.token_ids) for c in first[0]}) > 1  # samples of one prompt differ


def test_stops_at_end_of_turn_token(tokenizer):
    model = tiny_qwen2(len(tokenizer))
    eot = ChatFormat(tokenizer).end_of_turn_id
    hidden = model.config.hidden_size
    head = torch.nn.Linear(hidden, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[eot] = 10.0
    model.lm_head = head
    out = backend(tokenizer, model=model).generate(PROMPTS[:2], SamplingParams(n=2, temperature=0, max_new_tokens=8))
    for row in out:
        for c in row:
            assert c.finish_reason == "stop" and c.token_ids == [] and c.text == "" and c.num_tokens == 1


def test_generation_leaves_the_callers_random_state_as_it_was(tokenizer):
    """Sampling seeds itself per call; a caller's RNG (a training loop's, saved in its checkpoints) must not move."""
    b = backend(tokenizer, batch_size=4)
    params = SamplingParams(n=2, temperature=1.0, top_k=0, max_new_tokens=6, seed=5)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = b.generate(PROMPTS, params)
    assert torch.equal(torch.get_rng_state(), state)
    expected = torch.rand(3, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(torch.rand(3), expected)  # the caller's stream goes on exactly as if nothing had been generated
    assert b.generate(PROMPTS, params) == first  # and the samples are still the seed's
