"""Stage 5, validate: evaluating a candidate, scoring lines and judging anomalies, templates,
and what operators' labels teach."""
