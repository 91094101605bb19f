"""The audit: Monte-Carlo draws of Gaussian weight noise, scored and bounded into a certificate.

Takes a policy, a loaded model and its tasks. Gives a `Certificate` and the per-draw log behind it:
`perturb` (noise regenerable from (seed, draw, tensor)), `sample` (the loop over draws), `drawlog`
(append-only log, resume), `verdicts` (the rules that turn bounds into pass/fail), `run` (one audit;
`certify_model` for in-memory models), `job` (the whole `certify` job: load, audit or sigma search,
publish), `sigma_search`, `plan`, `replay`, `fragility`, `distributed`, `seeding`.
"""
