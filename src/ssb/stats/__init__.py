"""The statistics behind every reported number: pass@k and intervals (``metrics``), paired comparisons of models and
arms (``comparison``), the two-level bootstrap over runs and questions (``bootstrap``), declared analysis plans
(``analysis_plan``) and engine anchors (``engine_anchors``).

Pure computation on scores and records: may import the standard library, numpy, each other, ``ssb.grading`` (answers
that agree, for maj@k) and ``ssb.config`` (the bounded display of a plan's values); nothing that runs a model, a stage
or a run folder.
"""
