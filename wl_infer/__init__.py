"""wl infer: verifiable distributed LLM inference over a wanted board."""

__version__ = "0.1.0"
