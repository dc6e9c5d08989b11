"""Where the package caches what it builds: rendered datasets, black boxes, maskers, downloads."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "default_cache_dir"]

#: Environment variable that overrides the cache folder (default ``~/.cache/captum_realtime_mask``).
CACHE_ENV = "CAPTUM_REALTIME_MASK_CACHE"


def default_cache_dir() -> Path:
    """The package's cache folder: ``$CAPTUM_REALTIME_MASK_CACHE``, else ``~/.cache/...``.

    Returns:
        ``$CAPTUM_REALTIME_MASK_CACHE`` when set, else ``$XDG_CACHE_HOME/captum_realtime_mask``,
        else ``~/.cache/captum_realtime_mask``. The folder is not created here.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "captum_realtime_mask"
