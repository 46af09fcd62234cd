"""Models: resolve names to local directories (aliases, GGUF conversion, hub) and load them."""
from ahalab.models.load import load_model, save_model, with_lora
from ahalab.models.resolve import ALIASES, DEFAULT_MODEL, convert_gguf, list_models, resolve_model

__all__ = ["ALIASES", "DEFAULT_MODEL", "convert_gguf", "list_models", "load_model", "resolve_model", "save_model",
           "with_lora"]
