"""The model: the weights to audit and exactly which bytes they came from.

Takes a built-in name or a Hugging Face directory (safetensors only, never a pickle). Gives the loaded
model with its `ModelIdentity` (per-file sha256 and a root digest; `checkpoint`) and streaming,
bounded-memory reads of safetensors tensors for comparing two checkpoints (`tensor_stream`).
"""
