"""NuLog's scoring defaults, used wherever a model's own values are not known: the gate's run
config, `logloop score`, the Scorer, evaluation and templates. Opni's values: a token counts as
predicted when the model ranks it within its top 50, and a line whose share of predicted tokens
is below 0.7 is an anomaly."""

DEFAULT_TOP_K = 50
DEFAULT_THRESHOLD = 0.7
