"""The arms trained by TRL's trainers, fed ssb's data, chat template, LoRA shape and evaluation: GRPO (``grpo``) and
on-policy self-distillation (``onpolicy``, with the privileged contexts its teacher sees, ``privileged_context``); what
they share (``trl``: budgets, checkpoints, sampler choice, trainer arguments, train-and-save, and the one seam to TRL's
private members, version-checked; ``engine_rollouts``: a trainer's completions sampled by ssb's engine).

May import the method's modules (config, data, chat, models, lora, grading, generation) and the run folder; the report
never imports them.
"""
