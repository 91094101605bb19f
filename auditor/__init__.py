"""auditor: certify how robust an LLM's capabilities are to changes of its weights."""

__version__ = "0.1.0"
