"""Freeze a user's classifier for a block of code and prove afterwards that it was left as found."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_mod

__all__ = [
    "ModelSnapshot",
    "find_module",
    "floating_dtype",
    "frozen_model",
    "snapshot_model",
    "weights_in_format",
]

# Per-module hook registries of torch.nn.Module (the ones missing in older torch are skipped).
_MODULE_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
# Hooks registered for every module at once (torch.nn.modules.module.register_module_*_hook).
_GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_hooks_always_called",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
    "_global_module_registration_hooks",
    "_global_parameter_registration_hooks",
    "_global_buffer_registration_hooks",
)


def floating_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of a module's first floating parameter (else buffer), or None.

    That is the precision it computes in: ``torch.float64`` after ``model.double()``, say.
    """
    tensors = itertools.chain(module.parameters(), module.buffers())
    return next((t.dtype for t in tensors if t.is_floating_point()), None)


def find_module(forward_func: Any) -> nn.Module | None:
    """The :class:`torch.nn.Module` behind a forward function, if one can be seen.

    Args:
        forward_func: A module, a bound method of a module (``model.forward``), or any other
            callable.

    Returns:
        The module, or None for a callable that does not expose one (a lambda, a plain
        function): such a classifier cannot be frozen from outside and is left to the caller.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> find_module(net) is net, find_module(net.forward) is net, find_module(abs)
        (True, True, None)
    """
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    if isinstance(owner, nn.Module):
        return owner
    return None


@contextlib.contextmanager
def frozen_model(model: nn.Module | Callable[..., Any] | None) -> Iterator[nn.Module | None]:
    """Put a classifier in eval mode with frozen parameters for the duration of a block.

    On entry every module is switched to eval mode (dropout off, batch-norm statistics fixed)
    and every parameter gets ``requires_grad=False``, so that gradients reach only the tensors
    the caller optimises (a mask, a masker) and no ``.grad`` accumulates on the classifier. On
    exit, also when the block raises, each module's ``training`` flag and each parameter's
    ``requires_grad`` are restored one by one to exactly what they were, so mixed states (a
    frozen backbone in a training head, a module in eval inside a model in train mode) survive.
    The context manager registers no hook and touches no parameter value or buffer.

    Args:
        model: The classifier: a module, a bound method of one, or another callable. For a
            callable that exposes no module (see :func:`find_module`) nothing is changed.

    Yields:
        The module that was frozen, or None.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> with frozen_model(net):
        ...     net.training, net[0].weight.requires_grad
        (False, False)
        >>> net.training, net[0].weight.requires_grad
        (True, True)
    """
    module = find_module(model)
    if module is None:
        yield None
        return
    modes = [(m, m.training) for m in module.modules()]
    grads = [(p, p.requires_grad) for p in module.parameters()]
    try:
        module.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        yield module
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in grads:
            p.requires_grad_(requires_grad)


@contextlib.contextmanager
def weights_in_format(
    modules: Iterable[nn.Module], memory_format: torch.memory_format
) -> Iterator[None]:
    """Store the modules' 4-D parameters and buffers in ``memory_format`` for a block.

    Convolutions run in the memory format of their weights and inputs, so a block that feeds
    ``torch.channels_last`` images to modules whose weights are channels-last too avoids a
    layout conversion in every call. On exit, also when the block raises, each tensor gets
    back its own storage and strides, holding the values it has then: a frozen classifier
    is left exactly as it was, and a module trained in the block keeps what it learned.
    Tensors shared by several modules are handled once.

    Args:
        modules: The modules (a classifier, a masker that shares its backbone, ...).
        memory_format: ``torch.channels_last`` or ``torch.contiguous_format``.

    Yields:
        Nothing; the modules are changed in place for the duration of the block.

    Example:
        >>> conv = nn.Conv2d(3, 8, 3)
        >>> cl = torch.channels_last
        >>> with weights_in_format([conv], cl):
        ...     conv.weight.is_contiguous(memory_format=cl), conv.weight.is_contiguous()
        (True, False)
        >>> conv.weight.is_contiguous()
        True
    """
    seen: set[int] = set()
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    for module in modules:
        for t in itertools.chain(module.parameters(), module.buffers()):
            if t.dim() == 4 and id(t) not in seen:
                seen.add(id(t))
                saved.append((t, t.data))
    try:
        for t, data in saved:
            t.data = data.contiguous(memory_format=memory_format)
        yield
    finally:
        with torch.no_grad():
            for t, data in saved:
                if t.data_ptr() != data.data_ptr():  # converted: move the values back
                    data.copy_(t.data)
                    t.data = data


def _hook_keys(registry: Any) -> tuple[Any, ...]:
    """Keys of a hook registry (an OrderedDict, a set, or None) as a sorted tuple."""
    if not registry:
        return ()
    return tuple(sorted(registry, key=repr))


@dataclass
class ModelSnapshot:
    """What a model looks like from outside: modes, gradient flags, hooks and optionally values.

    Attributes:
        training: Module name to its ``training`` flag.
        requires_grad: Parameter name to its ``requires_grad`` flag.
        grads: Parameter name to whether its ``.grad`` is set.
        hooks: ``"module name:registry"`` (or ``"param:name"``, ``"global:registry"``) to the
            ids of the hooks registered there.
        tensors: Parameter and buffer name to a CPU copy of its value, when requested.
    """

    training: dict[str, bool]
    requires_grad: dict[str, bool]
    grads: dict[str, bool]
    hooks: dict[str, tuple[Any, ...]]
    tensors: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def differences(self, other: ModelSnapshot) -> list[str]:
        """Human-readable list of everything that differs from ``other`` (empty if nothing).

        Example:
            >>> net = nn.Linear(2, 2)
            >>> before = snapshot_model(net)
            >>> _ = net.eval()
            >>> before.differences(snapshot_model(net))
            ['training[] True -> False']
        """
        out: list[str] = []
        for attr in ("training", "requires_grad", "grads", "hooks"):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            for key in sorted(set(mine) | set(theirs)):
                if mine.get(key) != theirs.get(key):
                    out.append(f"{attr}[{key}] {mine.get(key)} -> {theirs.get(key)}")
        if self.tensors is not None and other.tensors is not None:
            for key in sorted(set(self.tensors) | set(other.tensors)):
                a, b = self.tensors.get(key), other.tensors.get(key)
                if a is None or b is None or a.shape != b.shape or not torch.equal(a, b):
                    out.append(f"tensors[{key}] changed")
        return out


def snapshot_model(model: nn.Module, tensors: bool = False) -> ModelSnapshot:
    """Record a model's modes, gradient flags and hooks (and values) to compare later.

    Meant for tests and sanity checks around code that borrows a user's model: take one
    snapshot before, one after, and assert that :meth:`ModelSnapshot.differences` is empty.

    Args:
        model: The module to record.
        tensors: Also copy every parameter and buffer to the CPU (memory: one model's worth).

    Returns:
        The snapshot.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> before = snapshot_model(net, tensors=True)
        >>> handle = net.register_forward_hook(lambda *args: None)
        >>> [d.split("]")[0] for d in before.differences(snapshot_model(net, tensors=True))]
        ['hooks[:_forward_hooks']
        >>> handle.remove()
        >>> before.differences(snapshot_model(net, tensors=True))
        []
    """
    training = {name: m.training for name, m in model.named_modules()}
    params = dict(model.named_parameters())
    requires_grad = {name: p.requires_grad for name, p in params.items()}
    grads = {name: p.grad is not None for name, p in params.items()}
    hooks: dict[str, tuple[Any, ...]] = {}
    for name, m in model.named_modules():
        for registry in _MODULE_HOOK_DICTS:
            keys = _hook_keys(getattr(m, registry, None))
            if keys:
                hooks[f"{name}:{registry}"] = keys
    for name, p in params.items():
        keys = _hook_keys(getattr(p, "_backward_hooks", None))
        if keys:
            hooks[f"param:{name}"] = keys
    for registry in _GLOBAL_HOOK_DICTS:
        keys = _hook_keys(getattr(_module_mod, registry, None))
        if keys:
            hooks[f"global:{registry}"] = keys
    values = None
    if tensors:
        values = {name: p.detach().cpu().clone() for name, p in params.items()}
        values.update({f"buffer:{n}": b.detach().cpu().clone() for n, b in model.named_buffers()})
    return ModelSnapshot(training, requires_grad, grads, hooks, values)
