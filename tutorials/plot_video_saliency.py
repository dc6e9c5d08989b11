"""
Real-time video saliency
========================

The paper's closing remark: a masker fast enough for video. Here a Fashion-MNIST item walks
across a photograph; we explain the frames as they arrive, one at a time (latency) and in
batches (throughput), report frames per second, track the item with the mask's box, and write
an overlay GIF with :func:`~captum_realtime_mask.visualization.overlay_mask`.

The classifier and masker are the quickstart's, at the same size: the black box comes from the
cache of :func:`~captum_realtime_mask.benchmark.blackbox.train_blackbox`, and the masker from
the folder where the quickstart saved it (it is fitted here as there when that folder is
missing).
"""

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from captum_realtime_mask import RealTimeMaskAttribution
from captum_realtime_mask.benchmark.blackbox import BLACKBOX_PRESETS, train_blackbox
from captum_realtime_mask.datasets import (
    FASHION_MNIST_CLASSES,
    ClutteredConfig,
    ClutteredFashionMNIST,
    default_cache_dir,
    load_backgrounds,
    load_fashion_mnist,
)
from captum_realtime_mask.metrics import localisation_details
from captum_realtime_mask.visualization import overlay_mask

SIZE_NAME = os.environ.get("CAPTUM_REALTIME_MASK_TUTORIAL_SIZE", "small")  # as the quickstart
FULL = SIZE_NAME == "full"
N_FRAMES = 24 if SIZE_NAME == "tiny" else 48
SIZE = 64
torch.manual_seed(0)

# %%
# The classifier and the masker
# -----------------------------
# The same sizes as the quickstart, so the black box comes from the cache it filled.
N_TRAIN = {"tiny": 256, "small": 4000, "full": 20000}[SIZE_NAME]
N_TEST = {"tiny": 64, "small": 200, "full": 1000}[SIZE_NAME]
BLACKBOX_STEPS = {"tiny": 8, "small": None, "full": None}[SIZE_NAME]
MASKER_EPOCHS = {"tiny": 1, "small": 3, "full": 4}[SIZE_NAME]
MASKER_STEPS = {"tiny": 8, "small": None, "full": None}[SIZE_NAME]
data = ClutteredConfig(n_train=N_TRAIN, n_val=100, n_test=N_TEST)
model = train_blackbox(BLACKBOX_PRESETS["resnet"], dataset=data, max_steps=BLACKBOX_STEPS)
saved = default_cache_dir() / "tutorials" / f"quickstart-{SIZE_NAME}"
if (saved / "config.json").is_file():
    attr = RealTimeMaskAttribution.load(saved, model)
else:
    attr = RealTimeMaskAttribution(model)
    train = ClutteredFashionMNIST("train", data, return_boxes=False)
    loader = DataLoader(
        train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    attr.fit(loader, epochs=MASKER_EPOCHS, max_steps=MASKER_STEPS, progress=False)

# %%
# A generated clip
# ----------------
# One test item (a bag), scaled to 28 px, moves along a curve over a 64 x 64 crop of a
# photograph; its opacity comes from its intensity, like the benchmark's composites.
items, labels = load_fashion_mnist("test")
k = int(np.flatnonzero(labels == 8)[0])  # "Bag"
item = torch.from_numpy(items[k].astype(np.float32) / 255.0)
label = int(labels[k])
background = next(iter(load_backgrounds().values()))
bg = torch.from_numpy(background[:SIZE, :SIZE].astype(np.float32) / 255.0).permute(2, 0, 1)
bg = bg * 0.7 + 0.15
colour = torch.tensor([0.95, 0.85, 0.3]).view(3, 1, 1)

frames, true_boxes = [], []
for t in range(N_FRAMES):
    u = t / (N_FRAMES - 1)
    x0 = int(round(2 + u * (SIZE - 28 - 4)))
    y0 = int(round((SIZE - 28) / 2 + 14 * np.sin(2 * np.pi * u)))
    frame = bg.clone()
    alpha = (item * 3).clamp(max=1)
    region = frame[:, y0 : y0 + 28, x0 : x0 + 28]
    frame[:, y0 : y0 + 28, x0 : x0 + 28] = region * (1 - alpha) + colour * item * alpha
    ys, xs = torch.nonzero(alpha >= 0.5, as_tuple=True)
    true_boxes.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max(), y0 + ys.max()])
    frames.append(frame)
clip = torch.stack(frames)
true_boxes = torch.tensor(true_boxes, dtype=torch.float32)
print(f"clip: {tuple(clip.shape)}, item: {FASHION_MNIST_CLASSES[label]}")

# %%
# Explain the stream
# ------------------
# Frame by frame, as a camera would deliver them. ``target=None`` explains whatever the
# classifier predicts in each frame (one classifier call plus one masker pass); with a fixed
# target only the masker runs.
with torch.no_grad():
    attr.mask(clip[:1], target=label)  # warm-up
    masks, preds = [], []
    t0 = time.perf_counter()
    for frame in clip:
        batch = frame.unsqueeze(0)
        masks.append(attr.mask(batch, target=None))
    latency_fps = N_FRAMES / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for frame in clip:
        attr.mask(frame.unsqueeze(0), target=label)
    fixed_fps = N_FRAMES / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    batched = attr.mask(clip, target=label)
    batch_fps = N_FRAMES / (time.perf_counter() - t0)
    preds = model(clip).argmax(-1)
masks = torch.cat(masks)
print(f"one frame at a time, predicted class: {latency_fps:6.1f} frames/s")
print(f"one frame at a time, fixed class:     {fixed_fps:6.1f} frames/s")
print(f"whole clip as one batch:              {batch_fps:6.1f} frames/s")
print(f"threads: {torch.get_num_threads()}, device: cpu")

# %%
# Tracking with the mask's box
# ----------------------------
# The tightest box around each streamed mask (threshold 0.5, predicted class), and its IoU
# with the item's true box per frame; then the same for the masks of the true class. Where
# the classifier takes the item for another class, the mask of that class can be empty, and
# its box is then the whole image (IoU about 0.12 here).
details = localisation_details(masks, true_boxes.unsqueeze(1))
print("IoU per frame:", [round(float(v), 2) for v in details.ious])
print(f"frames predicted as {FASHION_MNIST_CLASSES[label]}: {int((preds == label).sum())}")
print(f"frames localised (IoU > 0.5), predicted class: {int(details.hits.sum())} / {N_FRAMES}")
fixed = localisation_details(batched, true_boxes.unsqueeze(1))
print(f"frames localised (IoU > 0.5), true class:      {int(fixed.hits.sum())} / {N_FRAMES}")

# %%
# An overlay GIF
# --------------
# :func:`~captum_realtime_mask.visualization.overlay_mask` draws the masks in the ``inferno``
# colour map over the frames, ``(1 - alpha) * frame + alpha * colour`` with ``alpha=0.45``,
# the whole clip in one vectorised call: ``(N, 3, H, W)`` frames and ``(N, 1, H, W)`` masks
# give ``(N, H, W, 3)`` uint8 pictures. ``"jet"`` and ``"gray"`` need no matplotlib; other
# colour maps are matplotlib's. The GIF is enlarged four times.
overlays = overlay_mask(clip, masks, colormap="inferno", alpha=0.45)
out = default_cache_dir() / "tutorials" / "video_saliency.gif"
out.parent.mkdir(parents=True, exist_ok=True)
pictures = [
    Image.fromarray(picture).resize((4 * SIZE, 4 * SIZE), Image.NEAREST) for picture in overlays
]
pictures[0].save(out, save_all=True, append_images=pictures[1:], duration=80, loop=0)
print(f"wrote {out} ({out.stat().st_size // 1024} KiB, {len(pictures)} frames)")
# The command line does the same for a video file or a camera, and writes an MP4:
# ``captum-realtime-mask video clip.mp4 --masker FOLDER --output overlay.mp4``.

# %%
# A few frames of it, with the true box (white) and the mask's box (cyan):
fig, axes = plt.subplots(1, 6, figsize=(12, 2.4))
for ax, t in zip(axes, np.linspace(0, N_FRAMES - 1, 6).astype(int)):
    ax.imshow(overlays[t])
    for box, colour_name in [(true_boxes[t], "w"), (details.boxes[t], "c")]:
        x1, y1, x2, y2 = box.tolist()
        rect = plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1 + 1, y2 - y1 + 1, fill=False)
        rect.set_edgecolor(colour_name)
        ax.add_patch(rect)
    ax.set_title(f"frame {t}: {FASHION_MNIST_CLASSES[int(preds[t])]}", fontsize=8)
    ax.axis("off")
plt.tight_layout()
