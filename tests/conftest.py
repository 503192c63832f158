import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import SHARED_TOKENIZER, byte_tokenizer, save_tiny_model  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def qwen_tokenizer():
    if not SHARED_TOKENIZER.exists():
        pytest.skip("../shared/models/qwen2.5-tokenizer is not present")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(SHARED_TOKENIZER)
