"""Ground-truth boxes from PASCAL VOC / ILSVRC XML annotation files, mapped to the input size.

Both datasets store one ``<annotation>`` per image with ``<filename>``, ``<size>`` (``<width>``,
``<height>``) and one ``<object>`` per box (``<name>``, ``<bndbox>`` with ``<xmin>``, ``<ymin>``,
``<xmax>``, ``<ymax>``, and in VOC an optional ``<difficult>``). VOC coordinates are 1-based
inclusive pixel indices (``one_based=True``, the default); pass ``one_based=False`` for files
whose coordinates start at 0. Check the convention of your copy of the ILSVRC files: a
coordinate of 0 anywhere means they are 0-based.

The ImageNet localisation protocol of the paper resizes the whole image to the classifier's
input size, ignoring the aspect ratio; ``size=`` maps the boxes the same way
(:func:`resize_pixel_boxes`). For other preprocessing (resize then centre crop), parse with
``size=None`` and transform the boxes with your own pipeline (e.g.
``torchvision.tv_tensors.BoundingBoxes`` with ``x2 + 1``, ``y2 + 1`` as exclusive edges).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import IO, Any

import torch
from torch import Tensor

from captum_realtime_mask._checks import describe, size_pair
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics.boxes import as_box_tensor

__all__ = ["BoxAnnotation", "parse_voc_xml", "resize_pixel_boxes"]


@dataclass(frozen=True)
class BoxAnnotation:
    """The ground-truth boxes of one image.

    Attributes:
        filename: The ``<filename>`` of the annotation ("" when absent).
        size: ``(height, width)`` of the frame the boxes are in: the requested input size, or
            the original size when none was requested.
        original_size: ``(height, width)`` of the original image, from ``<size>``.
        boxes: ``(K, 4)`` float32 boxes, 0-based inclusive pixel indices in ``size``.
        names: The ``K`` class names (``<name>``: a VOC class or an ImageNet WordNet id).
        difficult: The ``K`` VOC ``<difficult>`` flags (False when absent).
    """

    filename: str
    size: tuple[int, int]
    original_size: tuple[int, int]
    boxes: Tensor
    names: tuple[str, ...]
    difficult: tuple[bool, ...]


def resize_pixel_boxes(
    boxes: Tensor,
    from_size: int | tuple[int, int],
    to_size: int | tuple[int, int],
) -> Tensor:
    """Map inclusive pixel boxes from an image to the same image resized to ``to_size``.

    The box's pixel edges ``[x1, x2 + 1)`` are scaled by ``to_width / from_width`` (likewise for
    y), rounded to the nearest pixel edge and turned back into inclusive indices; every box
    keeps at least one pixel and stays inside the image. The aspect ratio is not kept: this is
    the whole-image resize of the paper's ImageNet protocol.

    Args:
        boxes: ``(..., 4)`` boxes in 0-based inclusive pixel indices of ``from_size``.
        from_size: ``(height, width)`` of the original image (an int for a square one).
        to_size: ``(height, width)`` of the resized image (an int for a square one).

    Returns:
        ``(..., 4)`` float32 boxes in 0-based inclusive pixel indices of ``to_size``.

    Example:
        >>> resize_pixel_boxes(torch.tensor([[0.0, 0.0, 99.0, 49.0]]), (100, 200), (10, 10))
        tensor([[0., 0., 4., 4.]])
    """
    from_h, from_w = size_pair(from_size, "from_size")
    to_h, to_w = size_pair(to_size, "to_size")
    b = as_box_tensor(boxes, "boxes")
    scale = torch.tensor([to_w / from_w, to_h / from_h] * 2, dtype=torch.float64, device=b.device)
    edges = b.to(torch.float64) + torch.tensor([0, 0, 1, 1], dtype=torch.float64, device=b.device)
    edges = torch.floor(edges * scale + 0.5)
    limit = torch.tensor([to_w - 1, to_h - 1], dtype=torch.float64, device=b.device)
    low = torch.minimum(edges[..., :2].clamp_min(0), limit)
    high = torch.maximum(torch.minimum(edges[..., 2:] - 1, limit), low)
    return torch.cat([low, high], dim=-1).to(torch.float32)


def _text(element: ET.Element, path: str, source: str, required: bool = True) -> str:
    """Return the stripped text of ``path`` below ``element``, or raise InputError."""
    found = element.find(path)
    if found is None or found.text is None or not found.text.strip():
        if required:
            raise InputError(
                f"Annotation {source} has no <{path}>; a PASCAL VOC / ILSVRC file needs "
                "<size><width>, <size><height> and, per <object>, <name> and "
                "<bndbox><xmin>/<ymin>/<xmax>/<ymax>."
            )
        return ""
    return found.text.strip()


def _number(element: ET.Element, path: str, source: str) -> float:
    """Return the number stored in ``path`` below ``element``, or raise InputError."""
    text = _text(element, path, source)
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"Annotation {source}: <{path}> must be a number; got {text!r}.") from None
    if not math.isfinite(value):
        raise InputError(f"Annotation {source}: <{path}> must be finite; got {text!r}.")
    return value


def _source_name(source: Any) -> str:
    """How messages name the annotation ``source`` (a path or a file object), or InputError."""
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        return repr(name) if isinstance(name, str) else "(file object)"
    raise InputError(
        f"must be a path or an open file of an XML annotation; got {describe(source)}.",
        argument="source",
    )


def _original_size(root: ET.Element, where: str) -> tuple[int, int]:
    """``(height, width)`` from ``<size>``: positive whole numbers, or InputError."""
    orig_w = _number(root, "size/width", where)
    orig_h = _number(root, "size/height", where)
    if orig_w < 1 or orig_h < 1 or orig_w != int(orig_w) or orig_h != int(orig_h):
        raise InputError(
            f"Annotation {where}: <size> must hold positive whole <width> and <height>; "
            f"got width={orig_w}, height={orig_h}."
        )
    return int(orig_h), int(orig_w)


def _object_box(
    obj: ET.Element, source: str, label: str, offset: float, size: tuple[int, int]
) -> list[float]:
    """The 0-based inclusive box of one ``<object>``, clamped to the image, or InputError.

    ``source`` names the object in messages; ``offset`` (1 for 1-based files) is subtracted
    from the coordinates; ``size`` is the original ``(height, width)``.
    """
    corners = ("xmin", "ymin", "xmax", "ymax")
    coords = [_number(obj, f"bndbox/{c}", source) - offset for c in corners]
    x1, y1, x2, y2 = (math.floor(v + 0.5) for v in coords)
    height, width = size
    if x2 < x1 or y2 < y1:
        raise InputError(
            f"Annotation {source} ({label!r}) has a reversed box {coords} "
            "(0-based); <xmin> must not exceed <xmax>, nor <ymin> <ymax>."
        )
    if x1 > width - 1 or y1 > height - 1 or x2 < 0 or y2 < 0:
        raise InputError(
            f"Annotation {source} ({label!r}) lies outside the image: {coords} "
            f"(0-based) in a {width}x{height} image. Check `one_based` and the file."
        )
    x1, y1 = max(x1, 0), max(y1, 0)
    x2, y2 = min(x2, width - 1), min(y2, height - 1)
    return [float(x1), float(y1), float(x2), float(y2)]


def parse_voc_xml(
    source: str | os.PathLike[str] | IO[bytes] | IO[str],
    size: int | tuple[int, int] | None = None,
    *,
    one_based: bool = True,
    include_difficult: bool = True,
    device: torch.device | str | None = None,
) -> BoxAnnotation:
    """Read one PASCAL VOC / ILSVRC XML annotation and map its boxes to the input size.

    Coordinates are read as numbers (some files write ``"48.0"``), shifted to 0-based when
    ``one_based``, clamped to the original image (a reversed box, or one wholly outside the
    image, is an error), and mapped with :func:`resize_pixel_boxes`
    when ``size`` is given. The result's ``boxes`` plug straight into ``gt_boxes=`` and
    ``boxes=`` of the metrics: ``[parse_voc_xml(p, 224).boxes for p in paths]``.

    Args:
        source: Path of the XML file, or an open file object.
        size: ``(height, width)`` of the classifier input the image was resized to (an int for
            a square one); None keeps the original coordinates.
        one_based: True for 1-based coordinates (PASCAL VOC), False for 0-based ones.
        include_difficult: False drops objects marked ``<difficult>1</difficult>``.
        device: Device of the boxes tensor.

    Returns:
        A :class:`BoxAnnotation`.

    Raises:
        InputError: The file is not well-formed XML or lacks a required field.

    Example:
        >>> import io
        >>> xml = io.StringIO(
        ...     "<annotation><filename>cat.jpg</filename>"
        ...     "<size><width>200</width><height>100</height></size>"
        ...     "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        ...     "<xmax>100</xmax><ymax>50</ymax></bndbox></object></annotation>"
        ... )
        >>> ann = parse_voc_xml(xml, size=10)
        >>> ann.names, ann.original_size, ann.boxes
        (('cat',), (100, 200), tensor([[0., 0., 4., 4.]]))
    """
    where = _source_name(source)
    try:
        root = ET.parse(source).getroot()
    except ET.ParseError as err:
        raise InputError(f"Annotation {where} is not well-formed XML: {err}.") from None
    original_size = _original_size(root, where)
    offset = 1.0 if one_based else 0.0
    rows: list[list[float]] = []
    names: list[str] = []
    difficult: list[bool] = []
    for k, obj in enumerate(root.iter("object")):
        hard = _text(obj, "difficult", where, required=False) not in ("", "0")
        if hard and not include_difficult:
            continue
        label = _text(obj, "name", f"{where} object {k}")
        rows.append(_object_box(obj, f"{where} object {k}", label, offset, original_size))
        names.append(label)
        difficult.append(hard)
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    frame = original_size
    if size is not None:
        frame = size_pair(size, "size")
        boxes = resize_pixel_boxes(boxes, original_size, frame)
    return BoxAnnotation(
        filename=_text(root, "filename", where, required=False),
        size=frame,
        original_size=original_size,
        boxes=boxes.to(device) if device is not None else boxes,
        names=tuple(names),
        difficult=tuple(difficult),
    )
