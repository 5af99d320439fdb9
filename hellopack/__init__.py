"""hellopack: distilled images plus low-rank label generators in one archive (HeLlO)."""

__version__ = "0.1.0"
