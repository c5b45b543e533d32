"""vidbrief: videos in, written briefs out — Redis stream → Ray chain → PDF + webhook."""

__version__ = "0.1.0"
__all__ = ["__version__"]
