"""`mvit2deploy val`: task accuracy of every artifact and runtime on a labelled dataset (README "Val")."""
from .layouts import LAYOUTS, DatasetError, open_dataset
from .run import ValResult, val

__all__ = ["val", "ValResult", "LAYOUTS", "DatasetError", "open_dataset"]
