"""The one LoRA set-up of every trained arm (distillation, GRPO): ``distill.lora`` as PEFT's config.

Built here only, so "the same adapter shape for every arm" holds by construction: ssb's own training
loop wraps the model with ``build_peft_model``, and TRL's trainers get the same ``peft_lora_config``.
A saved adapter is loaded back with ``load_adapter`` (evaluation, a round's merge).
"""

from __future__ import annotations


def peft_lora_config(config):
    """``config.distill.lora`` as a PEFT ``LoraConfig`` (no bias, causal LM)."""
    from peft import LoraConfig

    lora = config.distill.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules),
                      bias="none", task_type="CAUSAL_LM")


def build_peft_model(model, config):
    """``model`` with fresh LoRA adapters of the run's shape (PEFT initialises B to zero: the base model's function),
    recomputing activations in backward when ``distill.gradient_checkpointing`` asks (TRL's trainers do their own)."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, peft_lora_config(config))
    if config.distill.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return peft_model


def load_adapter(model, adapter_dir):
    """``model`` with the PEFT adapter saved in ``adapter_dir``; one PEFT cannot load (weights of another rank or modules
    than its adapter_config.json, a truncated weights file) is a RunFolderError naming the folder."""
    import torch
    from peft import PeftModel
    from safetensors import SafetensorError

    from ssb.artifacts import RunFolderError

    try:
        return PeftModel.from_pretrained(model, str(adapter_dir))
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, SafetensorError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = next((line for line in lines if line.startswith("size mismatch")), lines[0]).rstrip(".")  # torch lists every tensor
        raise RunFolderError(f"{adapter_dir}: the adapter does not load ({detail}); its weights file is damaged or does not "
                             "match its adapter_config.json: train it again, or restore the folder as it was saved") from None
