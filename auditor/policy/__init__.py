"""The policy: what to audit and what passes.

Takes a YAML policy file (or text). Gives a validated `Policy` (`schema.load_policy`, pydantic, unknown keys
refused), its task specs (`tasks`: sources, oracles, requirements) and, on any problem, one line per field
naming the file (`messages`).
"""
