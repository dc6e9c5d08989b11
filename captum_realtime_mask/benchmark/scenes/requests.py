"""Which maps the scenes suite asks for: every present class of a scene, and one absent class.

A method explains one (image, class) pair per map. For each scene the suite requests a map of
every class present in it (in drawing order) and of one class absent from it, drawn from the
run's seed, so every method is asked for the same pairs. The scene metrics want those maps
laid out per scene, ``(N, K, H, W)`` with ``K = max_items + 1`` slots and ``-1`` in unused
ones; :meth:`Requests.layout` puts a method's ``(P, 1, H, W)`` maps there.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from captum_realtime_mask.datasets.scenes import NUM_CLASSES, FashionMNISTScenes

__all__ = ["Requests", "SceneImages", "scene_images", "scene_requests"]


class SceneImages(NamedTuple):
    """A split in memory: float images, multi-hot labels, and each scene's boxes and classes."""

    images: Tensor  # (N, 3, S, S) float in [0, 1]
    labels: Tensor  # (N, 10) multi-hot
    boxes: list[Tensor]  # N x (M_i, 4) float, inclusive pixel boxes
    classes: list[Tensor]  # N x (M_i,) long

    def first(self, n: int | None) -> SceneImages:
        """The first ``n`` scenes (all of them for None)."""
        if n is None or n >= len(self.images):
            return self
        return SceneImages(self.images[:n], self.labels[:n], self.boxes[:n], self.classes[:n])


def scene_images(split: FashionMNISTScenes) -> SceneImages:
    """A scene split's images, labels, boxes and classes."""
    counts = split.counts.tolist()
    return SceneImages(
        split.float_images(),
        split.labels,
        [split.boxes[i, :c].float() for i, c in enumerate(counts)],
        [split.classes[i, :c].clone() for i, c in enumerate(counts)],
    )


class Requests(NamedTuple):
    """The (image, class) pairs asked of every method, and where each map goes per scene.

    Attributes:
        image: ``(P,)`` the scene of each pair.
        target: ``(P,)`` its class.
        present: ``(P,)`` whether the class is in the scene.
        slot: ``(P,)`` its column in the per-scene layout.
        scenes: Number of scenes ``N``.
        slots: Columns ``K`` of the per-scene layout.
    """

    image: Tensor
    target: Tensor
    present: Tensor
    slot: Tensor
    scenes: int
    slots: int

    def layout(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """Maps ``(P, 1, H, W)`` of these pairs as ``(N, K, H, W)`` and their targets ``(N, K)``.

        Unused slots hold zero maps and target ``-1``, which the scene metrics skip.
        """
        out = maps.new_zeros(self.scenes, self.slots, *maps.shape[-2:])
        out[self.image, self.slot] = maps[:, 0]
        target = torch.full((self.scenes, self.slots), -1, dtype=torch.long)
        target[self.image, self.slot] = self.target
        return out, target

    def where(self, keep: Tensor) -> Requests:
        """The pairs where ``keep`` (a ``(P,)`` bool) is True, in the same layout."""
        return Requests(
            self.image[keep],
            self.target[keep],
            self.present[keep],
            self.slot[keep],
            self.scenes,
            self.slots,
        )


def scene_requests(data: SceneImages, seed: int, absent: bool = True) -> Requests:
    """Every present class of every scene, and (``absent``) one absent class per scene.

    The absent class of scene ``i`` is drawn uniformly among the classes not in it, from a
    generator seeded with ``seed``, so it does not depend on the methods run before.

    Example:
        >>> data = SceneImages(
        ...     torch.zeros(2, 3, 8, 8), torch.zeros(2, 10),
        ...     [torch.zeros(1, 4), torch.zeros(2, 4)], [torch.tensor([3]), torch.tensor([1, 5])],
        ... )
        >>> req = scene_requests(data, seed=0)
        >>> req.image.tolist(), req.present.tolist()
        ([0, 0, 1, 1, 1], [True, False, True, True, False])
    """
    g = torch.Generator().manual_seed(seed)
    image, target, present, slot = [], [], [], []
    for i, classes in enumerate(data.classes):
        wanted = classes.tolist()
        if absent:
            others = [c for c in range(NUM_CLASSES) if c not in wanted]
            wanted.append(others[int(torch.randint(len(others), (1,), generator=g))])
        for k, c in enumerate(wanted):
            image.append(i)
            target.append(c)
            present.append(k < len(classes))
            slot.append(k)
    slots = max((len(c) for c in data.classes), default=0) + int(absent)
    return Requests(
        torch.tensor(image, dtype=torch.long),
        torch.tensor(target, dtype=torch.long),
        torch.tensor(present, dtype=torch.bool),
        torch.tensor(slot, dtype=torch.long),
        len(data.classes),
        max(slots, 1),
    )
