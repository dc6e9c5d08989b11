"""Masks drawn over their images: :func:`overlay_mask`, the package's one overlay helper.

Like pytorch-grad-cam's ``show_cam_on_image``, :func:`overlay_mask` colours a mask with a
colour map and blends it over the image, returning an ``(H, W, 3)`` RGB array (or an
``(N, H, W, 3)`` stack for a batch) ready for :class:`PIL.Image.Image`, ``plt.imshow`` or a
video writer. It needs neither OpenCV nor matplotlib for the built-in colour maps (``"jet"``,
``"gray"``); any other matplotlib colour map name needs matplotlib (the ``viz`` extra), imported
only then. The command line's ``explain`` and ``video`` and the tutorials draw with it.

Example:
    >>> import torch
    >>> image = torch.zeros(3, 4, 4)  # a black (C, H, W) image in [0, 1]
    >>> mask = torch.ones(4, 4)  # the whole image salient
    >>> out = overlay_mask(image, mask, alpha=1.0)
    >>> out.shape, out.dtype.name, out[0, 0].tolist()  # jet's top colour, dark red
    ((4, 4, 3), 'uint8', [128, 0, 0])
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from captum_realtime_mask._checks import describe, one_of, real
from captum_realtime_mask.errors import InputError

__all__ = ["BUILTIN_COLORMAPS", "colormap_lut", "overlay_mask"]

#: Colour maps drawn without matplotlib, as matplotlib draws them: each channel's
#: ``(position, value)`` knots, linearly interpolated (matplotlib's segment data).
_SEGMENTS: dict[str, tuple[tuple[tuple[float, float], ...], ...]] = {
    "jet": (
        ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
        ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
        ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
    ),
    "gray": (((0.0, 0.0), (1.0, 1.0)),) * 3,
}

#: The colour map names :func:`overlay_mask` draws without matplotlib.
BUILTIN_COLORMAPS: tuple[str, ...] = tuple(_SEGMENTS)

_LUT_SIZE = 256
_DTYPES = ("uint8", "float32")


def colormap_lut(colormap: Any = "jet") -> np.ndarray:
    """The colour map as a ``(K, 3)`` float32 lookup table in ``[0, 1]`` (K = 256 for names).

    A mask value ``m`` in ``[0, 1]`` gets row ``min(floor(m * K), K - 1)``, as matplotlib
    colours floats, so the built-in maps give matplotlib's colours exactly.

    Args:
        colormap: A name (``"jet"`` and ``"gray"`` built in; any other matplotlib colour map
            name, such as ``"inferno"`` or ``"viridis"``, with matplotlib installed), a
            matplotlib ``Colormap`` object, or a ``(K, 3)`` (or ``(K, 4)``, alpha dropped)
            table of RGB colours, floats in ``[0, 1]`` or uint8.

    Returns:
        A new ``(K, 3)`` float32 array.

    Raises:
        InputError: An unknown name or a malformed table (``argument="colormap"``).
        ImportError: A name that is not built in, without matplotlib (the ``viz`` extra).

    Example:
        >>> colormap_lut("jet")[[0, -1]].round(3).tolist()
        [[0.0, 0.0, 0.5], [0.5, 0.0, 0.0]]
    """
    if isinstance(colormap, str):
        return _named_lut(colormap).copy()
    if callable(colormap) and hasattr(colormap, "N"):  # a matplotlib Colormap
        table = np.asarray(colormap(np.linspace(0.0, 1.0, int(colormap.N))), dtype=np.float32)
        return np.ascontiguousarray(table[:, :3])
    return _table(colormap)


@functools.lru_cache(maxsize=32)
def _named_lut(name: str) -> np.ndarray:
    if name in _SEGMENTS:
        x = np.linspace(0.0, 1.0, _LUT_SIZE)
        channels = [np.interp(x, *zip(*knots)) for knots in _SEGMENTS[name]]
        return np.stack(channels, axis=1).astype(np.float32)
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            f"the colour map {name!r} needs matplotlib (built in without it: "
            f"{', '.join(BUILTIN_COLORMAPS)}): pip install 'captum-realtime-mask[viz]'"
        ) from exc
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise InputError(
            f"expected a matplotlib colour map name such as 'jet', 'inferno' or 'viridis', "
            f"got {describe(name)}.",
            "colormap",
        ) from None
    return np.asarray(cmap(np.linspace(0.0, 1.0, _LUT_SIZE))[:, :3], dtype=np.float32)


def _table(colormap: Any) -> np.ndarray:
    """A user's ``(K, 3)`` or ``(K, 4)`` colour table as float32 RGB in [0, 1]."""
    if isinstance(colormap, torch.Tensor):
        colormap = colormap.detach().cpu().numpy()
    if not isinstance(colormap, np.ndarray):
        raise InputError(
            "expected a colour map name (e.g. 'jet'), a matplotlib Colormap or a (K, 3) "
            f"colour table, got {describe(colormap)}.",
            "colormap",
        )
    table = colormap
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] not in (3, 4):
        raise InputError(
            f"a colour table must be shaped (K, 3) or (K, 4), got shape {table.shape}.",
            "colormap",
        )
    if table.dtype == np.uint8:
        table = table.astype(np.float32) / 255.0
    elif np.issubdtype(table.dtype, np.floating):
        table = table.astype(np.float32)
        if not (np.isfinite(table).all() and table.min() >= 0 and table.max() <= 1):
            raise InputError("a float colour table must hold values in [0, 1].", "colormap")
    else:
        raise InputError(
            f"a colour table must be uint8 or floats in [0, 1], got dtype {table.dtype}.",
            "colormap",
        )
    return np.ascontiguousarray(table[:, :3])


def overlay_mask(
    image: Any,
    mask: Any,
    *,
    colormap: Any = "jet",
    alpha: float = 0.5,
    dtype: str = "uint8",
) -> np.ndarray:
    """Colour ``mask`` with ``colormap`` and blend it over ``image``: ``(H, W, 3)`` RGB.

    Each pixel is ``(1 - alpha) * image + alpha * colormap(mask)``: ``alpha=0`` gives the
    image back, ``alpha=1`` the coloured mask alone. The mask is not rescaled (a mask of 0.2
    everywhere stays 0.2: blue in ``jet``), so masks of different images compare. A mask of
    another size than the image is resized to it (bilinear, as ``F.interpolate`` with
    ``align_corners=False``), so a mask computed at the model's size draws over the full-size
    frame.

    A batch is drawn in one vectorised pass: an ``(N, C, H, W)`` tensor or an
    ``(N, H, W, C)`` array with ``(N, H, W)`` or ``(N, 1, H, W)`` masks gives
    ``(N, H, W, 3)``.

    Args:
        image: RGB or grey image(s) in ``[0, 1]`` (floats) or ``[0, 255]`` (uint8): a torch
            tensor ``(C, H, W)`` or ``(N, C, H, W)``, a NumPy array ``(H, W, C)`` or
            ``(N, H, W, C)``, an ``(H, W)`` grey array, or a PIL image. C is 3, or 1 (grey,
            drawn as RGB), or 4 (alpha dropped). Tensors may live on any device.
        mask: Values in ``[0, 1]``, tensor or array: ``(H, W)`` or ``(1, H, W)`` for one
            image, ``(N, H, W)`` or ``(N, 1, H, W)`` for a batch; any size (resized).
        colormap: See :func:`colormap_lut`; default ``"jet"`` (no matplotlib needed).
        alpha: The coloured mask's weight in ``[0, 1]`` (default 0.5).
        dtype: ``"uint8"`` (default; ``[0, 255]``, rounded) or ``"float32"`` (``[0, 1]``).

    Returns:
        A new C-contiguous NumPy array, ``(H, W, 3)`` or ``(N, H, W, 3)``, on the CPU.

    Raises:
        InputError: A shape, dtype or value range that does not fit, naming the argument
            (``image``, ``mask``, ``colormap``, ``alpha`` or ``dtype``).
        ImportError: A colour map that needs matplotlib, without it (the ``viz`` extra).

    Example:
        >>> import numpy as np
        >>> frames = np.full((2, 8, 8, 3), 255, dtype=np.uint8)  # two white (H, W, C) frames
        >>> masks = np.zeros((2, 4, 4))  # smaller masks are resized
        >>> overlay_mask(frames, masks, alpha=0.5)[0, 0, 0].tolist()  # white and dark blue
        [128, 128, 191]
    """
    alpha = real(alpha, "alpha", 0, 1)
    dtype = one_of(dtype, "dtype", _DTYPES)
    scale = 255.0 if dtype == "uint8" else 1.0  # blend in the output's range: one pass less
    img, batched = _as_image(image, scale)
    n, height, width = img.shape[0], img.shape[1], img.shape[2]
    m = _as_mask(mask, batched, n, img.device)
    if tuple(m.shape[-2:]) != (height, width):
        m = F.interpolate(m.unsqueeze(1), size=(height, width), mode="bilinear").squeeze(1)
    lut = torch.from_numpy(colormap_lut(colormap)).to(img.device).mul_(scale)
    index = (m * len(lut)).clamp_(0, len(lut) - 1).int()  # floor, as matplotlib
    out = torch.lerp(img, F.embedding(index, lut), alpha)  # (1 - alpha) image + alpha colour
    if dtype == "uint8":
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    result = np.ascontiguousarray(out.cpu().numpy())
    return result if batched else result[0]


def _as_image(image: Any, scale: float) -> tuple[torch.Tensor, bool]:
    """``image`` as float32 ``(N, H, W, 3)`` in ``[0, scale]``, and whether it was a batch."""
    if not isinstance(image, (torch.Tensor, np.ndarray)):
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise InputError(
                "expected a torch tensor (C, H, W), a NumPy array (H, W, C) or a PIL image, "
                f"got {describe(image)}.",
                "image",
            )
        image = np.asarray(image.convert("RGB") if image.mode not in ("RGB", "L") else image)
    if isinstance(image, torch.Tensor):
        x = image.detach()
        if x.dim() == 2:
            x = x.unsqueeze(0)
        batched = x.dim() == 4
        if x.dim() not in (3, 4) or x.shape[-3] not in (1, 3, 4):
            hint = ""
            if x.dim() in (3, 4) and x.shape[-1] in (1, 3, 4):
                hint = " Hint: a tensor is channels-first; permute an (H, W, C) one first."
            raise InputError(
                f"expected a tensor shaped (C, H, W) or (N, C, H, W) with C 1, 3 or 4, got "
                f"{describe(x)}.{hint}",
                "image",
            )
        x = x if batched else x.unsqueeze(0)
        x = x.movedim(1, -1)
    else:
        x_np = image
        if x_np.ndim == 2:
            x_np = x_np[..., None]
        batched = x_np.ndim == 4
        if x_np.ndim not in (3, 4) or x_np.shape[-1] not in (1, 3, 4):
            raise InputError(
                "expected an array shaped (H, W), (H, W, C) or (N, H, W, C) with C 1, 3 or 4, "
                f"got shape {image.shape}. Hint: a NumPy image is channels-last.",
                "image",
            )
        if x_np.dtype != np.uint8 and x_np.dtype.kind != "f":
            raise InputError(f"expected uint8 or float values, got dtype {x_np.dtype}.", "image")
        x = _from_numpy(x_np if batched else x_np[None])
    if 0 in x.shape:
        raise InputError(f"expected a non-empty image, got shape {tuple(x.shape)}.", "image")
    if x.dtype == torch.uint8:
        x = x.float() if scale == 255 else x.float().div_(255)
    elif x.is_floating_point():
        x = x.float()
        if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
            raise InputError(
                "expected float values in [0, 1] (or uint8 in [0, 255]), got values in "
                f"[{float(x.min()):.3g}, {float(x.max()):.3g}]. Hint: undo the classifier's "
                "normalisation first.",
                "image",
            )
        if scale != 1:
            x = x * scale
    else:
        raise InputError(f"expected uint8 or float values, got dtype {x.dtype}.", "image")
    channels = x.shape[-1]
    if channels == 1:
        x = x.expand(*x.shape[:-1], 3)
    elif channels == 4:
        x = x[..., :3]
    return x.contiguous(), batched


def _as_mask(mask: Any, batched: bool, n: int, device: torch.device) -> torch.Tensor:
    """``mask`` as a float32 ``(N, h, w)`` tensor on ``device``, checked against the image."""
    if isinstance(mask, np.ndarray):
        if mask.dtype.kind not in "fui":
            raise InputError(f"expected float values in [0, 1], got dtype {mask.dtype}.", "mask")
        m = _from_numpy(mask)
    elif isinstance(mask, torch.Tensor):
        m = mask.detach()
    else:
        raise InputError(f"expected a torch tensor or a NumPy array, got {describe(mask)}.", "mask")
    shape = tuple(m.shape)
    if batched:
        ok = (m.dim() == 3 and shape[0] == n) or (m.dim() == 4 and shape[:2] == (n, 1))
        expected = f"(N, H, W) or (N, 1, H, W) with N = {n}, the image batch's size"
    else:
        ok = m.dim() == 2 or (m.dim() == 3 and shape[0] == 1)
        expected = "(H, W) or (1, H, W) for one image"
    if not ok:
        raise InputError(f"expected a mask shaped {expected}, got shape {shape}.", "mask")
    if 0 in shape:
        raise InputError(f"expected a non-empty mask, got shape {shape}.", "mask")
    m = m.to(device=device, dtype=torch.float32).reshape(n, shape[-2], shape[-1])
    if not bool(torch.isfinite(m).all()):
        raise InputError("expected finite values, got NaN or Inf.", "mask")
    low, high = float(m.min()), float(m.max())
    if low < 0 or high > 1:
        raise InputError(
            f"expected values in [0, 1], got values in [{low:.3g}, {high:.3g}]. Hint: rescale "
            "a saliency map first, e.g. (m - m.min()) / (m.max() - m.min()).",
            "mask",
        )
    return m


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``array``'s memory; it is only read, so a read-only array is fine."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(array))
