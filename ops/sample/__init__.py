"""Stage 3, sample: the training sample drawn from merged window summaries, and its file format."""
