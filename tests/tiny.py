"""Tiny random models and tokenizers built offline, for stage tests."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SHARED_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "models" / "qwen2.5-tokenizer"


def byte_tokenizer(chat_template: str = CHATML):
    """A byte-level BPE tokenizer with no merges (every text encodes) and ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_qwen2(vocab_size: int, seed: int = 0):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
        initializer_range=0.3,  # sharper next-token distributions than the default 0.02: KD losses are far from 0
    )
    return Qwen2ForCausalLM(config).eval()


def save_tiny_model(folder: Path, tokenizer=None, seed: int = 0) -> Path:
    """A tiny random Qwen2 model and tokenizer saved as a normal model folder."""
    tokenizer = tokenizer or byte_tokenizer()
    model = tiny_qwen2(len(tokenizer), seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def greedy_reference(model, tokenizer, conversation: list[dict], max_new_tokens: int) -> dict:
    """Greedy decoding written out token by token (one full forward per token, no cache, no batching,
    no ``generate``): the independent reference for what a backend's greedy evaluation must produce.

    Stops on the tokenizer's eos or any eos id of the model's generation config, as ChatML chat formats do.
    Returns a completion as the backends describe one: token ids and text without the stop token, finish
    reason, and generated tokens counting the stop token (evaluation samples record all but the ids).
    """
    import torch

    eos = model.generation_config.eos_token_id
    stops = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
    prompt = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    generated = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(torch.tensor([ids + generated])).logits[0, -1].argmax())
            if token in stops:
                return {"token_ids": generated, "text": tokenizer.decode(generated, skip_special_tokens=True), "finish_reason": "stop",
                        "num_tokens": len(generated) + 1}
            generated.append(token)
    return {"token_ids": generated, "text": tokenizer.decode(generated, skip_special_tokens=True), "finish_reason": "length",
            "num_tokens": len(generated)}


def recorded(completion: dict) -> dict:
    """The fields of a completion that an evaluation sample records and a greedy reference also gives."""
    return {k: completion[k] for k in ("text", "finish_reason", "num_tokens")}


def perturb_lora(peft_model, seed: int, std: float = 0.5) -> None:
    """Give every LoRA B matrix non-zero values from a seeded generator (PEFT initialises B to zero,
    which makes a fresh adapter compute exactly what the base model computes)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
