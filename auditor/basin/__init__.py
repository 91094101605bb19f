"""The basin, for the report and for science: loss-landscape slices around the audited weights.

Takes a policy's `landscape` section, a model and its tasks. Gives scores along random, fine-tune and
worst-case directions (`directions`, `landscape`) and the strict-basin test; its figures are drawn by
`auditor.certificate.plots`, from the landscape JSON alone, so a certificate can embed them.
"""
