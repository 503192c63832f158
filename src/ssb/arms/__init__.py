"""The arms trained by TRL's trainers, fed ssb's data, chat template, LoRA shape and evaluation: GRPO (``grpo``) and
on-policy self-distillation (``onpolicy``, with the privileged contexts its teacher sees, ``privileged_context``); what
they share (``trl``: budgets, checkpoints, train-and-save; ``epoch_order``: each epoch's order; ``engine_rollouts``:
completions sampled by ssb's engine through TRL's ``rollout_func``).

May import the method's modules (config, data, chat, models, lora, grading, generation) and the run folder; the report
never imports them.
"""
