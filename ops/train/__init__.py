"""Stage 4, train: when to train (decisions), the vocabulary, the NuLog model and its training loop."""
