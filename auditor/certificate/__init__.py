"""The certificate: the record of an audit and its renderings.

Takes the numbers an audit measured. Gives the versioned certificate model with its canonical JSON
(`schema`, the bytes that are hashed and signed), a self-contained HTML page and an A4 PDF (`render`)
with figures drawn from JSON alone (`plots`: bound curves, sigma search, landscape slices), and the
machine-readable outcomes CI reads: a JSON summary and JUnit XML (`report_formats`).
"""
