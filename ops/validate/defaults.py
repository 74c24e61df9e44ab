"""NuLog's scoring defaults, used wherever a model's own values are not known: the gate's run
config, `logloop score`, the Scorer, evaluation and templates. Opni's values: a token counts as
predicted when the model ranks it within its top 50, and a line whose share of predicted tokens
is below 0.7 is an anomaly."""

DEFAULT_TOP_K = 50
DEFAULT_THRESHOLD = 0.7
# The share of validation lines the score alone may flag; the gate calibrates each model's threshold
# to it (ops.validate.verdict.calibrate_threshold). Chosen leave-one-system-out on six Loghub systems
# (benchmarks/quality.py --choose-budget), never on BGL.
DEFAULT_FLAG_BUDGET = 0.0
