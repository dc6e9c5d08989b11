"""The PNG overlays ``explain`` writes: a mask blended over its image, one file per image.

The pixels are :func:`~captum_realtime_mask.visualization.overlay_mask`'s; ``video`` draws its
frames with it too, and both check ``--colormap`` here before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from captum_realtime_mask.cli.usage import CLIError, options_named

__all__ = ["check_colormap", "overlay_names", "save_overlay"]


def overlay_names(paths: Sequence[Path]) -> list[str]:
    """One overlay file name per image, ``<stem>_overlay.png``, never the same for two images.

    Images that share a stem (``a/x.png`` and ``b/x.png``, or ``x.png`` and ``x.jpg``) get
    ``<stem>-2_overlay.png``, ``<stem>-3_overlay.png``, ... after the first, in order.
    """
    names = [f"{p.stem}_overlay.png" for p in paths]
    taken = set(names)
    seen: set[str] = set()
    out = []
    for p, name in zip(paths, names):
        if name in seen:
            k = 2
            while f"{p.stem}-{k}_overlay.png" in taken:
                k += 1
            name = f"{p.stem}-{k}_overlay.png"
            taken.add(name)
        seen.add(name)
        out.append(name)
    return out


def check_colormap(colormap: str) -> None:
    """Refuse, before any work, a ``--colormap`` that :func:`overlay_mask` cannot draw.

    Raises:
        CLIError: An unknown name, or one that needs matplotlib (the ``viz`` extra) without it.
    """
    from captum_realtime_mask.visualization import colormap_lut

    try:
        with options_named(colormap=f"--colormap {colormap}"):
            colormap_lut(colormap)
    except ImportError as exc:
        raise CLIError(f"--colormap {colormap}: {exc}") from None


def save_overlay(
    image: torch.Tensor,
    mask: torch.Tensor,
    path: Path,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> None:
    """Write ``mask`` (``(1, h, w)``) blended over ``image`` (``(3, H, W)`` in [0, 1]) as a PNG.

    The overlay is :func:`~captum_realtime_mask.visualization.overlay_mask`'s, at the image's
    size, without matplotlib: the mask is not rescaled, so overlays of different images
    compare (an empty mask draws the image under the colour map's lowest colour).
    """
    from PIL import Image

    from captum_realtime_mask.visualization import overlay_mask

    pixels = overlay_mask(image, mask, colormap=colormap, alpha=alpha)
    Image.fromarray(pixels).save(path)
