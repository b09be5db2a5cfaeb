"""mvit2deploy: MobileViTv2 from PyTorch to deployment, exact, validated and measured."""
__version__ = "0.2.2"

from .models import CheckpointError, get_entry, list_models, load_model  # noqa: E402

__all__ = ["__version__", "load_model", "get_entry", "list_models", "CheckpointError"]
