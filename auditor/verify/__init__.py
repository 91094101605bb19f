"""Verification: check a signed run or a signed gate report against a public key, after the fact.

Takes a run folder, envelope, certificate or gate report, a public key and optionally the model or
candidate folder. Gives a `Verification` (valid, or invalid with a one-line reason): the signature and
statement (`envelope`), then for certificates the renders, attested inputs, draw log and sigma-grid steps
re-derived and the model files re-hashed (`certificates`), and for gate reports the candidate's files
(`gate_reports`). Tampering is always *invalid*, never a usage error.
"""
