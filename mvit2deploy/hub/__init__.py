"""The weights store: the local cache of official checkpoints (`store`) and their downloads (`download`).

`load_model(id, "official")` is the one door from a zoo id to a module with the official weights.
"""
from .download import (DEFAULT_RETRIES, DEFAULT_TIMEOUT, DownloadStopped, Limits, OfflineError, download_limits,
                       model_url, part_file, pull, resolve_base_url)
from .store import (VerifyResult, WeightsError, cache_file, cached, cached_ids, check_loads, home, import_file,
                    load_model, lock_path, read_lock, require_cached, verify, write_lock)

__all__ = ["DEFAULT_RETRIES", "DEFAULT_TIMEOUT", "DownloadStopped", "Limits", "OfflineError", "VerifyResult",
           "WeightsError", "cache_file", "cached", "cached_ids", "check_loads", "download_limits", "home",
           "import_file", "load_model", "lock_path", "model_url", "part_file", "pull", "read_lock",
           "require_cached", "resolve_base_url", "verify", "write_lock"]
