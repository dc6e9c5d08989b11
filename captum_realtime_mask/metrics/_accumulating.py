"""The torchmetrics base of the accumulating metrics: per-example list states, update returns.

:class:`~captum_realtime_mask.metrics.SaliencyMetric` and
:class:`~captum_realtime_mask.metrics.LocalisationEvaluator` keep one tensor per batch in list
states reduced with ``"cat"``, so torchmetrics gathers every process's examples before
``compute()``, and :meth:`~torchmetrics.Metric.forward` needs a single ``update`` per batch
(``full_state_update = False``). Unlike a plain :class:`torchmetrics.Metric`, their ``update``
returns the batch's per-example results, as it did before they became metrics.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["AccumulatingMetric"]


class AccumulatingMetric(Metric):
    """A :class:`torchmetrics.Metric` whose ``update`` returns what the subclass's returns.

    Subclasses register list states with ``add_state(name, [], dist_reduce_fx="cat")``, append
    one tensor per batch in ``update`` and read them back with :meth:`cat_state` (and count
    them with :meth:`state_length`).
    """

    full_state_update = False  # the global state is the concatenation of the batch states

    def _wrap_update(self, update: Callable[..., Any]) -> Callable[..., Any]:
        # torchmetrics wraps ``update`` (in __init__ and again after unpickling) and drops its
        # return value; keep it, so ``metric.update(...)`` still hands back the batch's results.
        returned: list[Any] = []

        @functools.wraps(update)
        def keep(*args: Any, **kwargs: Any) -> None:
            returned.append(update(*args, **kwargs))

        wrapped = super()._wrap_update(keep)

        @functools.wraps(update)
        def update_and_return(*args: Any, **kwargs: Any) -> Any:
            returned.clear()
            wrapped(*args, **kwargs)
            return returned.pop() if returned else None

        return update_and_return

    def state_length(self, name: str) -> int:
        """Number of examples in one list state (without concatenating its batches).

        Example:
            >>> from captum_realtime_mask.metrics import LocalisationEvaluator
            >>> evaluator = LocalisationEvaluator()
            >>> _ = evaluator.update(torch.ones(3, 4, 4), [0, 0, 3, 3])
            >>> evaluator.state_length("hit_batches")
            3
        """
        value = getattr(self, name)
        if isinstance(value, Tensor):
            return int(value.shape[0])
        return sum(int(part.shape[0]) for part in value)

    def cat_state(
        self, name: str, shape: tuple[int, ...] = (), dtype: torch.dtype | None = None
    ) -> Tensor:
        """One list state as a single tensor, in the order the examples were seen.

        The state is a list of batch tensors between updates, and one tensor after torchmetrics
        synchronised the processes; either way this returns one tensor, on the device of the
        first batch.

        Args:
            name: The state's name.
            shape: The trailing shape of one example (``(4,)`` for boxes), for an empty state.
            dtype: Convert to this dtype (for flags: a process that saw no example sends a
                float placeholder); None keeps the batches' dtype (float32 when empty).

        Returns:
            ``(num_examples, *shape)`` tensor.

        Example:
            >>> from captum_realtime_mask.metrics import LocalisationEvaluator
            >>> evaluator = LocalisationEvaluator()
            >>> evaluator.cat_state("box_batches", (4,)).shape
            torch.Size([0, 4])
        """
        value = getattr(self, name)
        if not isinstance(value, Tensor):
            if value:
                device = value[0].device
                value = torch.cat([part.to(device) for part in value])
            else:
                value = torch.zeros((0, *shape), device=self.device)
        return value if dtype is None else value.to(dtype)
