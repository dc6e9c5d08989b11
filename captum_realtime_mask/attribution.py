"""RealTimeMaskAttribution: the Captum attribution class that trains and runs the masker."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import nn

from captum_realtime_mask import __version__
from captum_realtime_mask import _checks as check
from captum_realtime_mask._captum_compat import (
    LOGITS_HINT,
    format_inputs,
    format_target,
    predicted_target,
)
from captum_realtime_mask._devices import check_device
from captum_realtime_mask._model_state import find_module, frozen_model
from captum_realtime_mask._speed import (
    AutocastArg,
    InferenceOptions,
    apply_inference_options,
    masker_forward,
    optimize_for_inference,
)
from captum_realtime_mask.checkpoint import write_checkpoint
from captum_realtime_mask.errors import CheckpointError, InputError
from captum_realtime_mask.hub import SharingMixin
from captum_realtime_mask.iterative import check_refinement
from captum_realtime_mask.masker.model import MaskerConfig, MaskingModel, Preset
from captum_realtime_mask.masker.resolve import (
    EncoderArg,
    derived_min_reduction,
    infer_num_classes,
    resolve_encoder,
)
from captum_realtime_mask.objective import ObjectiveConfig, resolve_objective
from captum_realtime_mask.saved import KIND, read_saved_masker
from captum_realtime_mask.training import FitConfig, fit_masker
from captum_realtime_mask.training.batches import peek_image_size

__all__ = ["RealTimeMaskAttribution"]


def _check_init_args(num_classes: Any, seed: Any, objective: Any) -> ObjectiveConfig:
    """Check the plain arguments of the constructor; return the objective to use."""
    check.integer(
        num_classes, "num_classes", 1, none_ok=True, hint="(None reads it from the classifier)"
    )
    check.integer(seed, "seed")
    if objective is None:
        return ObjectiveConfig()
    if isinstance(objective, dict):  # overrides of today's defaults (not a saved config)
        return ObjectiveConfig.from_dict({**ObjectiveConfig().to_dict(), **objective})
    if not isinstance(objective, ObjectiveConfig):
        raise InputError(
            "expected an ObjectiveConfig, a dict of its fields or None, got "
            f"{type(objective).__name__}.",
            argument="objective",
        )
    return replace(objective)  # our own copy: fit() records the resolved classifier_output


def _check_confidence(confidence: Any) -> float:
    """``confidence`` as a float, refusing non-numbers, NaN and infinities."""
    return check.real(confidence, "confidence", hint="Hint: pass a number; 0 is the default.")


class RealTimeMaskAttribution(SharingMixin, PerturbationAttribution):
    r"""Learned real-time saliency masks (Dabkowski & Gal, NIPS 2017) as a Captum method.

    A U-Net *masker* is trained once (:meth:`fit`) to produce, for any image and any class,
    the smallest smooth mask whose kept region alone lets the classifier recognise the class
    and whose removal destroys it (the objective in :mod:`captum_realtime_mask.objective`).
    Afterwards :meth:`attribute` explains a batch in one forward pass of the masker; the
    classifier's prediction is needed only when ``target`` is None (with the default
    ``encoder="classifier"`` its backbone runs anyway, as the masker's encoder).

    Args:
        forward_func: The classifier (logits ``(N, K)``); any differentiable timm or
            torchvision model, or a callable. It is never updated, and its modes,
            ``requires_grad`` flags and hooks are restored after every call.
        num_classes: Number of classes. None reads ``num_classes`` or the last Linear layer.
        encoder: ``"classifier"`` (default: the classifier's own frozen backbone, sharing its
            weights; the offline stand-in for the paper's ImageNet ResNet-50), a timm name such
            as ``"resnet50"`` (the paper's choice; ImageNet weights downloaded and frozen
            unless ``pretrained=False``, which trains it from scratch as in section 5.2),
            ``"torchvision:resnet50"``, ``"small_cnn"`` (the paper's CIFAR encoder), an
            :class:`~captum_realtime_mask.masker.EncoderSpec`, or an ``nn.Module`` returning a
            list of NCHW maps. For a name, the finest map the decoder reads is derived from
            the image size of the first fit(): stride 2 below 224 px, the paper's stride 4
            from 224 px up (at least 56 mask cells along the shorter side; see
            :func:`~captum_realtime_mask.masker.resolve.derived_min_reduction`). Pass an
            ``EncoderSpec`` to fix it yourself.
        pretrained: For named encoders: load ImageNet weights (needs a network). None means
            True.
        preset: ``"light"`` (default; widths from the encoder, 1 bottleneck, bilinear
            upsampling), ``"fast"`` (``light`` with channel reduction before each resize:
            a much cheaper decoder on wide encoders such as ResNet-50) or ``"paper"`` (768
            channels halving, 3 bottlenecks, transposed convs).
        masker_config: A full :class:`~captum_realtime_mask.masker.MaskerConfig` instead of
            ``preset`` (its ``num_classes`` and ``encoder`` are used as given).
        objective: Loss weights and evidence removal; default :class:`ObjectiveConfig`.
        seed: Seed of the masker's initial weights (the global RNG is left untouched).

    Example:
        >>> import timm
        >>> model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
        >>> attr = RealTimeMaskAttribution(model)
        >>> images = torch.rand(4, 3, 64, 64)
        >>> labels = torch.tensor([0, 1, 2, 0])
        >>> _ = attr.fit([(images, labels)], epochs=1, progress=False)
        >>> attr.attribute(images, target=2).shape
        torch.Size([4, 3, 64, 64])
        >>> attr.mask(images, target=labels).shape
        torch.Size([4, 1, 64, 64])
    """

    def __init__(
        self,
        forward_func: Callable[..., torch.Tensor],
        num_classes: int | None = None,
        encoder: EncoderArg = "classifier",
        pretrained: bool | None = None,
        preset: Preset = "light",
        masker_config: MaskerConfig | None = None,
        objective: ObjectiveConfig | None = None,
        seed: int = 0,
    ) -> None:
        if not callable(forward_func):
            raise InputError(
                f"expected the classifier (a callable), got {type(forward_func).__name__}.",
                argument="forward_func",
            )
        objective = _check_init_args(num_classes, seed, objective)
        super().__init__(forward_func)
        self.model = find_module(forward_func)
        # The decoder's finest map is derived from the first fit's image size when the
        # encoder was named by a string (an EncoderSpec or a MaskerConfig is kept as given).
        self._derive_reduction = masker_config is None and isinstance(encoder, str)
        if masker_config is None:
            num_classes = num_classes or infer_num_classes(self.model)
            if not num_classes or num_classes < 1:
                raise InputError(
                    "could not read the number of classes from the classifier; pass num_classes=K.",
                    argument="num_classes",
                )
            spec, module = resolve_encoder(encoder, pretrained)
            masker_config = MaskerConfig.preset(preset, num_classes, spec)
        else:
            module = encoder if isinstance(encoder, nn.Module) else None
        if masker_config.encoder.kind == "classifier" and self.model is None:
            raise InputError(
                "'classifier' reuses the classifier's backbone, so forward_func must be "
                "an nn.Module (or its bound forward); got a plain callable. Hint: pass "
                "encoder='small_cnn' or a timm model name.",
                argument="encoder",
            )
        self.objective = objective
        self.seed = int(seed)
        self._trained = False  # set by fit() and load(); attribute() warns before
        self.history: list[dict[str, float]] = []
        self._encoder_module = module
        self.masker = self._build_masker(masker_config)
        self._inference = InferenceOptions()

    def _build_masker(self, config: MaskerConfig) -> MaskingModel:
        """A fresh masker of ``config``, its initial weights drawn from :attr:`seed`."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            try:
                masker = MaskingModel(config, self.model, self._encoder_module)
            except (RuntimeError, OSError) as exc:
                if config.encoder.pretrained:
                    raise InputError(
                        "could not load pretrained weights for "
                        f"{config.encoder.name!r} ({exc}). Hint: without a network "
                        "pass pretrained=False (the encoder is then trained from scratch), or "
                        "use encoder='classifier'.",
                        argument="encoder",
                    ) from exc
                raise
        return masker.eval()

    def _derive_mask_grid(self, loader: Iterable) -> None:
        """Before the first fit, feed the decoder the stride that suits the images' size.

        Only for an untrained masker whose encoder was named by a string: the encoder's
        ``min_reduction`` becomes :func:`~captum_realtime_mask.masker.resolve.derived_min_reduction`
        of the training images' size (read without consuming the loader), and the masker is
        rebuilt from the same seed if that changes it. Its inference options are kept.
        """
        spec = self.masker.config.encoder
        # The small CNN always hands its stride-2 map to the decoder; a masker built in
        # inference mode is refused by fit() as it is.
        if not self._derive_reduction or self._trained or spec.kind == "small_cnn":
            return
        size = peek_image_size(loader)
        if size is None or any(p.is_inference() for p in self.masker.parameters()):
            return
        wanted = derived_min_reduction(*size)
        if spec.min_reduction == wanted:
            return
        with torch.inference_mode(False):  # fit() trains inside inference_mode() too
            if not self._masker_as_built():
                warnings.warn(
                    f"fit(): the masker was changed after it was built, so its decoder keeps "
                    f"stride {spec.min_reduction} instead of the {wanted} derived for "
                    f"{size[0]} x {size[1]} images (rebuilding would lose the change). Hint: "
                    f"build it with encoder=EncoderSpec(kind={spec.kind!r}, "
                    f"min_reduction={wanted}) before changing it.",
                    UserWarning,
                    stacklevel=3,
                )
                return
            config = replace(self.masker.config, encoder=replace(spec, min_reduction=wanted))
            self.masker = self._build_masker(config)
        apply_inference_options(self.masker, self._inference)

    def _mask_cells(self, loader: Iterable) -> tuple[int, int] | None:
        """Height and width in cells of the masks trained on ``loader``'s images, if known.

        None where the images' size cannot be read without consuming the loader; each
        training step then derives a TV weight of None from its own masks.
        """
        size = peek_image_size(loader)
        stride = self.masker.mask_stride
        return None if size is None else (size[0] // stride, size[1] // stride)

    def _masker_as_built(self) -> bool:
        """Whether the masker still has the modules and weights it was built with."""
        fresh = self._build_masker(self.masker.config)
        mine, new = dict(self.masker.named_modules()), dict(fresh.named_modules())
        if mine.keys() != new.keys() or any(type(mine[k]) is not type(new[k]) for k in mine):
            return False
        a, b = self.masker.state_dict(), fresh.state_dict()
        return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)

    @property
    def num_classes(self) -> int:
        """Number of classes the masker's embedding covers."""
        return self.masker.config.num_classes

    @property
    def multiplies_by_inputs(self) -> bool:
        """False: a mask is not multiplied by the inputs."""
        return False

    def has_convergence_delta(self) -> bool:
        """False: no convergence delta."""
        return False

    # ------------------------------------------------------------------ training
    def fit(
        self,
        loader: Iterable,
        epochs: int | None = None,
        max_steps: int | None = None,
        lr: float = 1e-3,
        device: str | torch.device | None = None,
        val_loader: Iterable | None = None,
        resume_from: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> RealTimeMaskAttribution:
        """Train the masker on ``loader``; the classifier stays frozen and untouched.

        Args:
            loader: Any iterable of ``(images, labels[, ...])`` batches, e.g. a DataLoader.
                Images in the classifier's input space; labels are class indices ``(N,)``
                or multi-hot vectors ``(N, K)`` (images with several objects).
                Floating images of any precision (float64 from ``torch.from_numpy``, float16,
                bfloat16) are cast to the masker's float32. A one-shot iterator that runs out
                before ``epochs`` or ``max_steps`` ends training with a warning.
            epochs: Passes over the loader. None (the default) with ``max_steps`` None: enough
                passes to show the masker about 60,000 images when the loader has a sized
                dataset (:func:`~captum_realtime_mask.training.default_epochs`: 6 for 10,000
                images, 1 for ImageNet's 1.28 million), else 1.
            max_steps: Stop after this many optimiser steps.
            lr: Adam learning rate.
            device: Where to train; None picks CUDA when present, else the classifier's
                device. The classifier is moved there for the fit and moved back after.
            val_loader: Optional loader; its mean loss terms enter each epoch's history. Its
                batches are checked and cast like the training batches.
            resume_from: A checkpoint directory (or a ``checkpoint_dir``) of an earlier run.
                Pass the same loader and options: the interrupted epoch is replayed from its
                start's random states (global torch, NumPy and Python RNGs and the
                DataLoader's generator, which are set again), skipping its finished batches,
                so the result equals an uninterrupted run's.
            **options: Any field of :class:`~captum_realtime_mask.training.FitConfig`
                (``amp``, ``seed``, ``progress``, ``grad_clip``, ``lr_schedule``,
                ``checkpoint_dir``, ``checkpoint_every``, ``keep_last``, ...).

        Training runs with gradients enabled, also when called inside ``torch.no_grad()`` or
        ``torch.inference_mode()``. Each call is a run of its own (a new optimiser, learning
        rate schedule and area warm-up), continuing the masker's weights.

        Returns:
            self, with :attr:`history` extended by one dict of mean loss terms per epoch. The
            new entries continue the ``epoch`` and ``steps`` numbering of earlier calls (like
            a Keras or Lightning history appended to). With ``resume_from`` it is replaced by
            the interrupted run's history (read from its checkpoint) and the epochs added now.

        Raises:
            InputError: Bad arguments or batches (the message names the argument), an
                unavailable ``device`` or a ``checkpoint_dir`` that is a file. Checked before
                the first step where possible; a failed call leaves :attr:`history` as it
                was.
            TrainingError: The loss or gradient stayed non-finite for ``nonfinite_patience``
                steps.
        """
        if self.model is None:
            raise InputError(
                "fit() needs the classifier as an nn.Module (or its bound "
                f"forward) to freeze it during training. Hint: {LOGITS_HINT}",
                argument="forward_func",
            )
        unknown = set(options) - set(FitConfig.__dataclass_fields__)
        if unknown:
            raise InputError(
                f"fit(): unknown options {sorted(unknown)}; accepted: "
                f"{sorted(FitConfig.__dataclass_fields__)}."
            )
        options.setdefault("seed", self.seed)
        config = FitConfig(epochs=epochs, max_steps=max_steps, lr=lr, **options)
        dev = self._training_device(None if device is None else check_device(device))
        before = self.masker, self.objective
        self._derive_mask_grid(loader)
        # Derived area and TV weights are fixed here, so the saved objective records them.
        self.objective = resolve_objective(
            self.objective, self.num_classes, mask_grid=self._mask_cells(loader)
        )
        try:
            history = fit_masker(
                self.masker,
                self.model,
                loader,
                self.objective,
                config,
                dev,
                val_loader=val_loader,
                resume_from=resume_from,
                save_extra=self._config_dict,
            )
        except BaseException:
            if self.masker is not before[0]:  # rebuilt for this fit: give the old one back
                self.masker, self.objective = before
            raise
        self._trained = True
        if resume_from is not None:
            self.history = list(history)
            return self
        # Continue the numbering of earlier fit() calls, as an appended-to history would.
        last = self.history[-1] if self.history else {}
        epoch0 = int(last.get("epoch", len(self.history) - 1)) + 1
        steps0 = int(last.get("steps", 0))
        self.history = self.history + [
            {**h, "epoch": h["epoch"] + epoch0, "steps": h["steps"] + steps0} for h in history
        ]
        return self

    def _training_device(self, device: str | torch.device | None) -> torch.device:
        if device is not None:
            return torch.device(device)
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    # ------------------------------------------------------------------ inference
    def _prepare(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: Any,
        additional_forward_args: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        x, was_tuple = format_inputs(inputs)
        c_in = self.masker.config.encoder.in_chans
        if x.shape[1] != c_in:
            raise InputError(
                f"the encoder takes {c_in} channels, got {x.shape[1]} (shape {tuple(x.shape)}).",
                argument="inputs",
            )
        stride = self.masker.max_stride
        if x.shape[-2] % stride or x.shape[-1] % stride:
            raise InputError(
                f"height and width must be divisible by the encoder's stride {stride}; "
                f"got {tuple(x.shape[-2:])}. Hint: resize or pad to a multiple of {stride}.",
                argument="inputs",
            )
        # The classifier runs when it is the encoder or when it must predict the target.
        uses_classifier = target is None or self.masker.config.encoder.kind == "classifier"
        param = next(self.model.parameters(), None) if self.model is not None else None
        if uses_classifier and param is not None and param.device != x.device:
            raise InputError(
                f"expected them on the classifier's device {param.device}, got "
                f"{x.device}. Hint: move one of them, e.g. inputs.to('{param.device}').",
                argument="inputs",
            )
        finite = torch.isfinite(x)
        if not finite.all():
            raise InputError(
                f"expected finite values, got {int((~finite).sum())} NaN or Inf "
                f"entries in shape {tuple(x.shape)}. Hint: check the preprocessing.",
                argument="inputs",
            )
        if target is None:
            # Predict in the classifier's own precision (the masker runs in float32 anyway).
            xp = x.to(param.dtype) if param is not None and param.is_floating_point() else x
            with frozen_model(self.forward_func):
                target = predicted_target(
                    self.forward_func, xp, additional_forward_args, self.num_classes
                )
        return x, format_target(target, len(x), x.device, self.num_classes), was_tuple

    def _warn_if_untrained(self, stacklevel: int) -> None:
        if not getattr(self, "_trained", True):  # objects pickled before the flag: trained
            warnings.warn(
                "RealTimeMaskAttribution: the masker has not been trained, so its masks mean "
                "nothing. Call fit() first, or build it with RealTimeMaskAttribution.load().",
                UserWarning,
                stacklevel=stacklevel + 1,
            )

    def _masks(self, x: torch.Tensor, target: torch.Tensor, confidence: float) -> torch.Tensor:
        self.masker.to(x.device)
        self.masker.eval()
        return masker_forward(self.masker, x, target, confidence, self._inference)

    def _refined_masks(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        confidence: float,
        steps: int,
        additional_forward_args: Any,
        refine_options: dict[str, Any] | None,
    ) -> torch.Tensor:
        """Per-image optimisation started from the learned masks, on the masker's own grid.

        The optimisation starts from the masker's mask before its final resize
        (``small_mask``), so that zero steps give back the learned mask (up to the clamp of
        ``init_mask``) and TV and area are taken at the resolution the masker was trained at;
        the iterative method's coarser default grid would blur a fine mask before the first
        step. ``refine_options`` may still set ``mask_size``, ``objective``, ``lr``, ...
        """
        from captum_realtime_mask.iterative import optimise_masks

        self.masker.to(x.device)
        self.masker.eval()
        small = self.masker(x.float(), target, confidence).small_mask
        options = dict(refine_options or {})
        options.setdefault("objective", self.objective)
        options.setdefault("mask_size", tuple(small.shape[-2:]))
        return optimise_masks(
            self.forward_func,
            x,
            target,
            init_mask=small,
            n_iter=steps,
            additional_forward_args=additional_forward_args,
            **options,
        ).to(x.dtype)

    def optimize_for_inference(
        self,
        channels_last: bool = False,
        autocast: AutocastArg = None,
        compile: bool = False,
        **compile_kwargs: Any,
    ) -> RealTimeMaskAttribution:
        """Choose how :meth:`attribute` and :meth:`mask` run the masker.

        Calling it again replaces the options; with no arguments it restores plain float32
        eager execution. The classifier is never converted or compiled (with
        ``encoder="classifier"`` channels_last reaches its backbone through the input only),
        saved files do not change, and :meth:`fit` always trains eagerly. Measured effects
        are in the docs' performance page: on GPUs, bf16 with channels_last is the fast
        setting; on CPUs without bf16 units, keep the defaults.

        Args:
            channels_last: NHWC input and masker weights.
            autocast: ``None`` (float32), ``"auto"`` (bf16 on CUDA where supported, else fp16;
                nothing on CPU), ``"bf16"`` or ``"fp16"``.
            compile: Compile the masker's decoder (and an encoder the masker owns) with
                :func:`torch.compile`; each new input shape compiles again.
            **compile_kwargs: Passed to :func:`torch.compile` (``mode``, ``dynamic``, ...).

        Returns:
            ``self``, for chaining.

        Raises:
            InputError: An unknown ``autocast`` name, or compile options without
                ``compile=True``.

        Example:
            >>> import timm
            >>> attr = RealTimeMaskAttribution(timm.create_model("test_resnet", num_classes=3))
            >>> attr.optimize_for_inference(channels_last=True).mask(
            ...     torch.rand(2, 3, 64, 64), target=1).shape
            torch.Size([2, 1, 64, 64])
        """
        return optimize_for_inference(self, channels_last, autocast, compile, **compile_kwargs)

    def export(
        self,
        path: str | os.PathLike[str],
        *,
        format: str | None = None,
        image_size: int | tuple[int, int] | None = None,
        opset: int | None = None,
        dtype: torch.dtype | str = torch.float32,
        confidence: float = 0.0,
    ) -> Any:
        """Write the masker as an ONNX file (onnxruntime) or a ``torch.export`` program.

        The graph maps ``images`` ``(N, C, H, W)`` float32 and ``classes`` ``(N,)`` int64 to
        ``masks`` ``(N, 1, H, W)``, equal to :meth:`mask` for any batch size; the classifier
        is left unchanged. See :func:`captum_realtime_mask.export.export_masker` for the
        arguments and the encoders that cannot be exported, and the docs' exporting page
        for running the file.

        Returns:
            The :class:`pathlib.Path` written.
        """
        from captum_realtime_mask.export import export_masker

        return export_masker(
            self,
            path,
            format=format,
            image_size=image_size,
            opset=opset,
            dtype=dtype,
            confidence=confidence,
        )

    @torch.no_grad()
    def mask(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        confidence: float = 0.0,
    ) -> torch.Tensor:
        """The raw single-channel masks ``(N, 1, H, W)`` in ``[0, 1]`` (one masker pass).

        Same arguments as :meth:`attribute` (without refinement).
        """
        self._warn_if_untrained(stacklevel=3)  # past torch.no_grad's wrapper
        confidence = _check_confidence(confidence)
        x, tgt, _ = self._prepare(inputs, target, additional_forward_args)
        return self._masks(x, tgt, confidence)

    @torch.no_grad()
    def attribute_classes(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        classes: Any = None,
        *,
        confidence: float = 0.0,
        max_classes_per_batch: int | None = 32,
    ) -> torch.Tensor:
        """Masks ``(N, K, H, W)`` for K classes per image, with one encoder pass per image.

        ``out[:, k]`` equals ``mask(inputs, target=classes[..., k])[:, 0]`` (up to float
        rounding), but the encoder runs once and only the decoder once per class. Inference
        options apply (see :func:`captum_realtime_mask.multiclass.multiclass_masks`).

        Args:
            inputs: Images ``(N, C, H, W)`` (or a 1-tuple of them), as for :meth:`attribute`.
            classes: A list or 1-D tensor of K classes for every image, an ``(N, K)`` tensor
                (or list of lists) of classes per image, or None for every class (K =
                :attr:`num_classes`).
            confidence: Offset added to the feature filter's gate logits.
            max_classes_per_batch: Classes decoded together (decoder batch ``N * this``),
                bounding memory; None decodes all K at once.

        Returns:
            Masks in ``[0, 1]``, same device and dtype as ``inputs``.

        Raises:
            InputError: Bad inputs, classes of another type or shape, or out of range.

        Example:
            >>> import timm
            >>> attr = RealTimeMaskAttribution(timm.create_model("test_resnet", num_classes=3))
            >>> attr.attribute_classes(torch.rand(2, 3, 64, 64), [2, 0]).shape
            torch.Size([2, 2, 64, 64])
        """
        from captum_realtime_mask.multiclass import format_classes, multiclass_masks

        self._warn_if_untrained(stacklevel=3)  # past torch.no_grad's wrapper
        confidence = _check_confidence(confidence)
        chunk = check.integer(max_classes_per_batch, "max_classes_per_batch", 1, none_ok=True)
        x, _, _ = self._prepare(inputs, 0, None)
        cls = format_classes(classes, len(x), self.num_classes, x.device)
        self.masker.to(x.device)
        self.masker.eval()
        return multiclass_masks(self.masker, x, cls, confidence, self._inference, chunk)

    @log_usage(part_of_slo=True)
    @torch.no_grad()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        confidence: float = 0.0,
        refine_steps: int = 0,
        refine_options: dict[str, Any] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Saliency masks for a batch, shaped like the inputs.

        Args:
            inputs: Images ``(N, C, H, W)`` (or a 1-tuple of them, as Captum's wrappers
                send), in the classifier's input space; H and W divisible by the encoder's
                largest stride (:attr:`masker.max_stride`).
            target: The class to explain per image: int, list/tuple of ints, 0-d or 1-D
                tensor. None explains the classifier's predicted class, which costs one
                classifier call; with a target the classifier's own prediction is not needed (with
                ``encoder="classifier"`` its backbone still runs, as the masker's encoder).
            additional_forward_args: Extra classifier arguments (used only when ``target``
                is None or when refining).
            confidence: Offset added to the feature filter's gate logits: > 0 keeps more of
                the image, < 0 makes masks stricter.
            refine_steps: When > 0, start per-image mask optimisation from the learned masks
                and run this many steps of the masker's own objective, on the masker's mask
                grid (see :mod:`captum_realtime_mask.iterative`).
            refine_options: Extra keyword arguments for
                :func:`~captum_realtime_mask.iterative.optimise_masks` (``lr``,
                ``mask_size``, ``objective``, ``generator``, ...).

        Returns:
            Masks in ``[0, 1]`` broadcast over the channels (a contiguous tensor shaped like
            ``inputs``, same device and dtype), or a 1-tuple of it when ``inputs`` was a tuple.
            For the single-channel mask use :meth:`mask`.
        """
        self._warn_if_untrained(stacklevel=4)  # past torch.no_grad's and log_usage's wrappers
        check_refinement(refine_steps, refine_options)
        confidence = _check_confidence(confidence)
        x, tgt, was_tuple = self._prepare(inputs, target, additional_forward_args)
        if refine_steps:
            mask = self._refined_masks(
                x, tgt, confidence, refine_steps, additional_forward_args, refine_options
            )
        else:
            mask = self._masks(x, tgt, confidence)
        out = mask.expand_as(x).contiguous()
        return (out,) if was_tuple else out

    # ------------------------------------------------------------------ persistence
    def _config_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "package_version": __version__,
            "masker": self.masker.config.to_dict(),
            "objective": self.objective.to_dict(),
            "seed": self.seed,
        }

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Save the masker: ``masker.safetensors`` and ``config.json`` (atomic).

        The classifier's weights are not saved; pass the classifier to :meth:`load`.

        Nothing the package did not write is ever deleted or replaced. ``directory`` may be a
        new path (created), an empty folder (``"."`` included), or a folder holding an earlier
        :meth:`save` or a training ``step-*`` checkpoint: that version is replaced, and other
        files you put there (a README, say) are kept. Any other existing path (a file, or a
        folder with other content) raises :class:`InputError` and is left as it is. A
        symbolic link is followed: the folder it points to is written and the link stays. An
        interrupted save leaves the previous version loadable (see
        :func:`~captum_realtime_mask.checkpoint.write_checkpoint`).

        Args:
            directory: The folder to write (a ``str`` or ``os.PathLike``).

        Raises:
            InputError: ``directory`` is not a path, is a file, or is a folder holding other
                files and no checkpoint of this package.
        """
        write_checkpoint(
            directory,
            {
                **self._config_dict(),
                "history": self.history,
                # Read the way load() reads the classifier it is given, to compare the two.
                "classifier_num_classes": infer_num_classes(self.model),
            },
            {"masker": self.masker.state_dict()},
        )

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        forward_func: Callable[..., torch.Tensor],
        encoder: nn.Module | None = None,
        device: str | torch.device = "cpu",
    ) -> RealTimeMaskAttribution:
        """Rebuild a saved masker (no training data needed; nothing is unpickled).

        Args:
            directory: What :meth:`save` wrote, a training ``step-*`` checkpoint folder, or
                the ``checkpoint_dir`` given to :meth:`fit` (its newest ``step-*`` folder is
                loaded).
            forward_func: The classifier the masker was trained for.
            encoder: The custom encoder module, for maskers saved with one.
            device: Where to put the masker (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a
                :class:`torch.device`; not ``"meta"``).

        Raises:
            InputError: An argument of the wrong type (for example ``directory`` and
                ``forward_func`` swapped), or a device that is unknown, unavailable or
                ``"meta"``.
            CheckpointError: Missing, truncated, tampered or incompatible files, or a
                classifier whose number of classes differs from the one the masker was
                trained for.
        """
        path, meta, tensors = read_saved_masker(directory, forward_func, encoder, device)
        masker_config = MaskerConfig.from_dict(meta["masker"])
        obj = ObjectiveConfig.from_dict(meta["objective"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if masker_config.encoder.pretrained:
                # Weights come from the checkpoint: do not download them again.
                masker_config.encoder.pretrained = False
                masker_config.encoder.frozen = True
            attr = cls(
                forward_func,
                masker_config=masker_config,
                encoder=encoder,
                objective=obj,
                seed=meta.get("seed", 0),
            )
        try:
            attr.masker.load_state_dict(tensors["masker"], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: the weights do not fit the masker described by its config "
                f"({exc}). Hint: load it with the classifier it was trained for."
            ) from exc
        attr.masker.to(device)
        attr._trained = True
        attr.history = meta.get("history", [])
        return attr
