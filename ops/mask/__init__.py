"""Stage 2, mask: messages masked into templates by rules held as data (masking_rules.yaml),
and each time window summarised (exact counts plus a bounded sketch) by the data stage."""
