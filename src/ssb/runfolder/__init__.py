"""The run folder: where every stage reads its inputs and writes its outputs (docs/run-folder.md).

``stages`` (the one table of stages), ``folder`` (a stage's life: recorded inputs, begin or skip, finish, digests),
``artifacts`` (the one way to write and read back its files: journals, atomic documents, digests, never through a
link), ``file_modes`` (modes that follow the umask), ``lock`` (one process per folder), ``record`` (the typed,
read-only reader the report uses) and ``export`` (export and restore).

May import what a manifest's provenance names (config, prompts, models, chat, grading, generation, objectives, training
data) and ``ssb.evaluation`` (the adapter fingerprint an export compares); never a stage's runner, the report or the arms.
"""
