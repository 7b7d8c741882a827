"""vlmtune: customize vision-language models on your own hardware (data -> baseline -> fine-tune -> evaluate -> serve)."""

__version__ = "0.1.0"
