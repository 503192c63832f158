"""Each epoch's question order drawn from (seed, epoch) in TRL's GRPO-family trainers, so that a resume reproduces it.

TRL's ``RepeatSampler`` shuffles with one generator carried over the epochs. A run resumed from a
checkpoint rebuilds the sampler, and its generator, from the seed: a run resumed in epoch 2 then trains
epoch 2 in epoch 1's order, not the one an uninterrupted run would (found by the on-policy arm's
kill/resume test: step-3 loss 0.17525 against 0.17490). Drawing each epoch's permutation from
``seed + epoch`` makes the order a function of the epoch alone. The trainer calls ``set_epoch`` at the
start of every epoch, a resumed one included.
"""

from __future__ import annotations


def epoch_seeded(trainer_class: type) -> type:
    """``trainer_class`` (TRL's ``GRPOTrainer`` or ``SDFTTrainer``, or a subclass) with its training sampler seeded per epoch."""
    from trl.trainer.utils import RepeatSampler

    class EpochSeededSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            if self.shuffle:
                self.generator.manual_seed(self.seed + epoch)

    class EpochSeeded(trainer_class):
        def _get_train_sampler(self, dataset=None):
            return EpochSeededSampler(self.train_dataset if dataset is None else dataset, mini_repeat_count=self.num_generations,
                                      batch_size=self.args.generation_batch_size // self.num_generations,
                                      repeat_count=self.num_iterations * self.args.steps_per_generation, shuffle=self.shuffle_dataset,
                                      seed=self.args.seed)

    EpochSeeded.__name__ = EpochSeeded.__qualname__ = f"EpochSeeded{trainer_class.__name__}"
    return EpochSeeded
