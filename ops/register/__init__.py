"""Stage 6, register: the model artifact format (safetensors + JSON in a zip, no pickle),
validated before a model is built from it."""
