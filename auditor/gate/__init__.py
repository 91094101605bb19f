"""The gate: does a candidate (fine-tune, adapter, token substitution) keep the certified guarantee?

Takes a signed base certificate, trusted only as far as it verifies and re-derives (`trust`,
`sigma_trust`), and an untrusted candidate folder, read exactly as the loader would (`candidate`).
Gives ||Delta|| against the certified radius for full checkpoints (`radius`) and LoRA adapters (`lora`),
both behind one entry point that takes the steps in order (`check`), and bounds for token substitutions
(`tokens`); no model is evaluated.
"""
