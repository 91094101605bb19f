"""Attestation: how an audit's results are sealed, so that anyone can check them later.

Takes a certificate (and the policy's inputs). Gives signing keys (`signing.keygen`), the sha256 of every
input besides the model and the policy that decides an outcome: scorers and data files (`inputs`), and a
published run (`publish`: certificate.json, HTML, a PDF with a PAdES signature, and an in-toto statement
over all of it in a DSSE envelope). The audit publishes through it; `auditor.verify` checks the result.
"""
