"""
Quickstart: explain a classifier on cluttered Fashion-MNIST
===========================================================

The whole loop in one script: build the benchmark data, train a black-box classifier, fit the
real-time masker for it, explain test images with one forward pass, show the masks with
Captum's visualisation and the package's overlays, and score them with the paper's metrics.

The default size runs in about five minutes on two CPU cores (less when the black box is
already cached); ``CAPTUM_REALTIME_MASK_TUTORIAL_SIZE=tiny`` only checks that the code runs, and
``full`` trains the benchmark's full-size models.
"""

# %%
# Sizes
# -----
import os
import time

import matplotlib.pyplot as plt
import torch
from captum.attr import visualization as viz
from torch.utils.data import DataLoader

from captum_realtime_mask import RealTimeMaskAttribution
from captum_realtime_mask.benchmark.blackbox import BLACKBOX_PRESETS, train_blackbox
from captum_realtime_mask.datasets import (
    FASHION_MNIST_CLASSES,
    ClutteredConfig,
    ClutteredFashionMNIST,
    default_cache_dir,
)
from captum_realtime_mask.metrics import LocalisationEvaluator, SaliencyMetric, centre_box
from captum_realtime_mask.visualization import overlay_mask

# "tiny" only checks that the code runs (seconds; its masks mean nothing), "small" trains a
# black box and a masker that work, in about five minutes on two CPU cores, "full" is the
# benchmark's size (an hour or more on a CPU).
SIZE = os.environ.get("CAPTUM_REALTIME_MASK_TUTORIAL_SIZE", "small")
FULL = SIZE == "full"
N_TRAIN = {"tiny": 256, "small": 4000, "full": 20000}[SIZE]  # training composites
N_TEST = {"tiny": 64, "small": 200, "full": 1000}[SIZE]  # test composites
BLACKBOX_STEPS = {"tiny": 8, "small": None, "full": None}[SIZE]  # None: all its epochs
MASKER_EPOCHS = {"tiny": 1, "small": 3, "full": 4}[SIZE]
MASKER_STEPS = {"tiny": 8, "small": None, "full": None}[SIZE]
torch.manual_seed(0)
start = time.perf_counter()

# %%
# The data
# --------
# Cluttered Fashion-MNIST pastes one Fashion-MNIST item on a real photograph, at a random
# place, scale and tint, and records the item's true box. Images are 64 x 64 RGB in
# ``[0, 1]``; every composite is a pure function of its index, so the splits are reproducible.
data = ClutteredConfig(n_train=N_TRAIN, n_val=100, n_test=N_TEST)
test = ClutteredFashionMNIST("test", data)
x_test, y_test, boxes_test = test.float_images(), test.labels, test.boxes

fig, axes = plt.subplots(1, 6, figsize=(12, 2.4))
for ax, img, label, box in zip(axes, x_test, y_test, boxes_test):
    ax.imshow(img.permute(1, 2, 0))
    x1, y1, x2, y2 = box.tolist()
    ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1 + 1, y2 - y1 + 1, fill=False, ec="w"))
    ax.set_title(FASHION_MNIST_CLASSES[int(label)], fontsize=9)
    ax.axis("off")
plt.tight_layout()

# %%
# A black-box classifier
# ----------------------
# :func:`~captum_realtime_mask.benchmark.blackbox.train_blackbox` trains a timm network from
# scratch (here the benchmark's ResNet preset, a half-width ResNet-10-T, for its 16 epochs on
# this script's training composites) and caches it, so a second run loads it. The returned
# model takes images in ``[0, 1]`` and normalises them itself. Any classifier works: the
# masker only needs its logits and, with the default ``encoder="classifier"``, its backbone.
model = train_blackbox(
    BLACKBOX_PRESETS["resnet"], dataset=data, max_steps=BLACKBOX_STEPS, log=print
)
print(f"black box test accuracy: {model.info['test_accuracy']:.3f}")

# %%
# Fit the masker
# --------------
# The masker is trained once, on plain ``(images, labels)`` batches; the classifier stays
# frozen. With ``encoder="classifier"`` (the default) the masker reads the classifier's own
# backbone, so only the small decoder and the class embedding are trained. No options: the
# library's default recipe is the one the benchmark uses. For these 64-pixel composites the
# first fit() lets the classifier's stride-2 map into the decoder (a 32 x 32 mask), as it
# does for any image under 224 px.
train = ClutteredFashionMNIST("train", data, return_boxes=False)
loader = DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
attr = RealTimeMaskAttribution(model)
attr.fit(loader, epochs=MASKER_EPOCHS, max_steps=MASKER_STEPS, progress=False)
print({k: round(v, 3) for k, v in attr.history[-1].items()})

# %%
# Explain: one forward pass
# -------------------------
# :meth:`~captum_realtime_mask.RealTimeMaskAttribution.attribute` returns masks shaped like
# the inputs (as Captum's metrics expect);
# :meth:`~captum_realtime_mask.RealTimeMaskAttribution.mask` the single channel.
# ``target=None`` would explain the predicted class.
x, y = x_test[:6], y_test[:6]
masks = attr.mask(x, target=y)
print(masks.shape, float(masks.min()), float(masks.max()))

# %%
# Captum's ``visualize_image_attr_multiple`` wants ``(H, W, C)`` numpy arrays and an image in
# ``[0, 1]``; masks are non-negative, so ``sign="positive"``.
image = x[0].permute(1, 2, 0).numpy()
heat = masks[0].permute(1, 2, 0).numpy()
_ = viz.visualize_image_attr_multiple(
    heat,
    image,
    methods=["original_image", "blended_heat_map", "heat_map"],
    signs=["all", "positive", "positive"],
    titles=["image", "mask over image", "mask"],
    show_colorbar=True,
    fig_size=(9, 3),
    use_pyplot=True,
)

# %%
# For our own figures the package has
# :func:`~captum_realtime_mask.visualization.overlay_mask`: the mask coloured with ``"jet"``
# and blended over the image (``alpha=0.5``), an ``(N, H, W, 3)`` uint8 array for a batch,
# ready for ``imshow``. Unlike Captum's ``blended_heat_map`` it does not rescale each mask to
# its maximum, so masks of different images and classes compare, and an empty mask is drawn
# too. The second row asks for a class that is *not* in the image: the masker was trained
# with such "fake selectors" to answer with an (almost) empty mask.
absent = (y + 1) % 10
masks_absent = attr.mask(x, target=absent)
rows = [(overlay_mask(x, masks), masks, y), (overlay_mask(x, masks_absent), masks_absent, absent)]
fig, axes = plt.subplots(2, 6, figsize=(12, 4.4))
for row, (pictures, ms, classes) in enumerate(rows):
    for i in range(6):
        axes[row, i].imshow(pictures[i])
        title = f"{FASHION_MNIST_CLASSES[int(classes[i])]}: {float(ms[i].mean()):.2f}"
        axes[row, i].set_title(title, fontsize=8)
        axes[row, i].axis("off")
plt.tight_layout()

# %%
# Score the masks
# ---------------
# The paper's protocol on the test split: localisation error (threshold 0.5, tightest box,
# hit when IoU > 0.5 with the item's box) and the saliency metric (lower is better), next to
# the centre-box baseline. The last lines compare the area the masks keep (above 0.5) for
# the true class and for a class that is not in the image. Trained on a fifth of the
# benchmark's data, both networks stay well behind the benchmark's figures (see its page).
loc, sal = LocalisationEvaluator(), SaliencyMetric(model)
loc_cb, sal_cb = LocalisationEvaluator(), SaliencyMetric(model)
cb = centre_box(64, 64)
kept = {"true": 0.0, "absent": 0.0}
for i in range(0, len(x_test), 32):
    xb, yb, bb = x_test[i : i + 32], y_test[i : i + 32], boxes_test[i : i + 32]
    mb = attr.mask(xb, target=yb)
    absent_mb = attr.mask(xb, target=(yb + 1) % 10)
    kept["true"] += float((mb > 0.5).float().mean((1, 2, 3)).sum())
    kept["absent"] += float((absent_mb > 0.5).float().mean((1, 2, 3)).sum())
    loc.update(mb, bb)
    sal.update(xb, mb, target=yb)
    loc_cb.update(None, bb, boxes=cb)
    sal_cb.update(xb, None, target=yb, boxes=cb)
print(f"{'method':<14}{'loc. error':>11}{'saliency':>10}")
print(f"{'real-time':<14}{float(loc.compute()):>11.3f}{float(sal.compute()):>10.3f}")
print(f"{'centre box':<14}{float(loc_cb.compute()):>11.3f}{float(sal_cb.compute()):>10.3f}")
print(f"black box accuracy on these images: {model.info['test_accuracy']:.3f}")
print(f"mask area above 0.5, true class:   {kept['true'] / len(x_test):.3f}")
print(f"mask area above 0.5, absent class: {kept['absent'] / len(x_test):.3f}")

# %%
# Save and reload
# ---------------
# The masker is saved as safetensors weights plus a JSON config; loading needs the classifier
# but no training data. We keep it in the package's cache folder, where the video tutorial
# finds it (saving again replaces the earlier version there).
folder = default_cache_dir() / "tutorials" / f"quickstart-{SIZE}"
attr.save(folder)
again = RealTimeMaskAttribution.load(folder, model)
assert torch.equal(again.mask(x, target=y), masks)
print(f"saved the masker to {folder}")
print(f"tutorial ran in {time.perf_counter() - start:.0f} s")
