"""videoseq: classify videos as sequences of frames."""
__version__ = "0.1.0"
