"""sentiment-mlops: the notebook-first train → evaluate → promote → serve → monitor loop."""

__version__ = "1.0.0"
