
from ssb.chat import ChatFormat, fold_system_into_user, messages, tokenizer_hash
from tiny import byte_tokenizer

NO_SYSTEM_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_chatml_prompt_and_end_of_turn(tokenizer):
    chat = ChatFormat(tokenizer)
    assert chat.supports_system_role
    assert chat.prompt_text(messages("S", "Q")) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    assert chat.end_of_turn_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = chat.prompt_ids(messages("S", "Q"))
    assert tokenizer.decode(ids) == chat.prompt_text(messages("S", "Q"))


def test_templates_without_system_role_get_it_folded_into_the_user_turn():
    chat = ChatFormat(byte_tokenizer(NO_SYSTEM_TEMPLATE))
    assert not chat.supports_system_role
    assert chat.prompt_text(messages("S", "Q")) == "<|im_start|>user\nS\n\nQ<|im_end|>\n<|im_start|>assistant\n"
    assert fold_system_into_user([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]


def test_real_qwen_template(qwen_tokenizer):
    chat = ChatFormat(qwen_tokenizer)
    assert chat.supports_system_role
    assert qwen_tokenizer.convert_ids_to_tokens(chat.end_of_turn_id) == "<|im_end|>"
    text = chat.prompt_text(messages("S", "Q"))
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    assert qwen_tokenizer.convert_ids_to_tokens(chat.prompt_ids(messages("S", "Q")))[0] == "<|im_start|>"


def test_tokenizer_hash_tracks_template(tokenizer):
    other = byte_tokenizer(NO_SYSTEM_TEMPLATE)
    assert tokenizer_hash(tokenizer) == tokenizer_hash(byte_tokenizer())
    assert tokenizer_hash(tokenizer) != tokenizer_hash(other)
