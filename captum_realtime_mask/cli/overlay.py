"""The PNG overlays ``explain`` writes: a mask blended over its image, one file per image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["overlay_names", "save_overlay"]


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


def save_overlay(image: torch.Tensor, mask: torch.Tensor, title: str, path: Path) -> None:
    """Write ``mask`` (``(1, H, W)``) blended over ``image`` (``(3, H, W)`` in [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from captum.attr import visualization as viz

    img = image.permute(1, 2, 0).cpu().numpy()
    heat = mask.permute(1, 2, 0).cpu().float().numpy()
    if float(heat.max()) > 0:
        fig, _ = viz.visualize_image_attr(
            heat,
            img,
            method="blended_heat_map",
            sign="positive",
            show_colorbar=True,
            title=title,
            use_pyplot=False,
        )
    else:  # an all-zero map: Captum refuses to normalise it
        fig, ax = plt.subplots()
        ax.imshow(img)
        ax.set_title(title + " (empty mask)")
        ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
