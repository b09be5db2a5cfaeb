"""mvit2deploy: MobileViTv2 from PyTorch to deployment, exact, validated and measured.

    import mvit2deploy
    model = mvit2deploy.load_model("mobilevitv2-0.5", weights="official")  # or a file, or None (random)

Importing the package is cheap: torch, ONNX and Core ML load only when a function needs them.
"""
__version__ = "0.6.0"

__all__ = ["__version__", "load_model", "get_entry", "list_models", "CheckpointError"]

_LAZY = {"load_model": "hub", "get_entry": "models.zoo", "list_models": "models.zoo", "CheckpointError": "errors"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
