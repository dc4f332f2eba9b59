"""IETA: Interactive Execution-Trace Alignment for code LLMs."""

__version__ = "0.1.0"
