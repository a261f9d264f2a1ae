"""Model references: aliases, local paths, the hub cache, the shipped tiny model."""
from .resolve import ALIASES, DEFAULT_MODEL, SHIPPED_PROMPT, ModelRef, load_config, resolve

__all__ = ["ALIASES", "DEFAULT_MODEL", "SHIPPED_PROMPT", "ModelRef", "load_config", "resolve"]
