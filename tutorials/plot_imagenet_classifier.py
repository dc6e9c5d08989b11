"""
Explaining an ImageNet classifier from timm or torchvision
==========================================================

The network path, as you would run it with a connection and the ImageNet validation set:
a pretrained timm (or torchvision) classifier, the paper's frozen pretrained ResNet-50
encoder, ImageNet images in an ``ImageFolder`` layout, and ILSVRC XML boxes for the
localisation protocol.

This machine has no network and no ImageNet, so by default the script runs the very same
code on tiny stand-ins: untrained networks (``pretrained=False``) that it trains for a few
steps, and a generated image folder with generated XML files. Set
``CAPTUM_REALTIME_MASK_NETWORK=1`` and ``IMAGENET_ROOT`` (holding ``train/``, ``val/`` and
``val_xml/``) to run the real thing on a GPU.
"""

# %%
# Configuration: the real path and its stand-ins
# ----------------------------------------------
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import timm
import torch
from captum.attr import visualization as viz
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from captum_realtime_mask import RealTimeMaskAttribution
from captum_realtime_mask.benchmark.blackbox import Normalize
from captum_realtime_mask.metrics import (
    centre_box,
    localisation_error,
    parse_voc_xml,
    saliency_metric,
)

NETWORK = os.environ.get("CAPTUM_REALTIME_MASK_NETWORK") == "1"
if NETWORK:
    CLASSIFIER, ENCODER, PRESET = "resnet50", "resnet50", "paper"
    IMAGE_SIZE, MASKER_STEPS, BATCH = 224, 20000, 64
    ROOT = Path(os.environ["IMAGENET_ROOT"])
else:
    CLASSIFIER, ENCODER, PRESET = "test_resnet", "test_resnet", "light"
    TINY = os.environ.get("CAPTUM_REALTIME_MASK_TUTORIAL_SIZE") == "tiny"
    IMAGE_SIZE, MASKER_STEPS, BATCH = 64, 6 if TINY else 60, 16
    STANDIN = tempfile.TemporaryDirectory()  # removed when the script ends
    ROOT = Path(STANDIN.name)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet normalisation
torch.manual_seed(0)

# %%
# Stand-in data: an ImageNet-like folder with XML boxes
# -----------------------------------------------------
# Three "synsets" (a red, a green and a blue object on textured noise), images of different
# sizes, and one ILSVRC-style XML file per validation image with 1-based box corners.
WNIDS = ["n01440764", "n01443537", "n01484850"]
COLOURS = np.array([[220, 40, 40], [40, 200, 60], [50, 80, 230]], dtype=np.uint8)


def write_standin(root: Path, n_train: int = 40, n_val: int = 8) -> None:
    rng = np.random.default_rng(0)
    (root / "val_xml").mkdir(parents=True, exist_ok=True)
    for split, n in [("train", n_train), ("val", n_val)]:
        for k, wnid in enumerate(WNIDS):
            (root / split / wnid).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(80, 120, size=2)
                img = (rng.random((h, w, 3)) * 140 + 40).astype(np.uint8)
                s = int(rng.integers(h // 3, h // 2))
                y0, x0 = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
                img[y0 : y0 + s, x0 : x0 + s] = COLOURS[k]
                name = f"{wnid}_{split}_{i}"
                Image.fromarray(img).save(root / split / wnid / f"{name}.JPEG", quality=95)
                if split == "val":
                    (root / "val_xml" / f"{name}.xml").write_text(
                        f"<annotation><filename>{name}</filename><size><width>{w}</width>"
                        f"<height>{h}</height><depth>3</depth></size><object><name>{wnid}"
                        f"</name><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
                        f"<xmax>{x0 + s}</xmax><ymax>{y0 + s}</ymax></bndbox></object>"
                        "</annotation>"
                    )


if not NETWORK:
    write_standin(ROOT, n_train=8 if TINY else 40, n_val=4 if TINY else 8)

# %%
# The classifier
# --------------
# Any timm or torchvision classifier works. We keep images in ``[0, 1]`` (handy for
# visualisation) and put the normalisation inside the model; the masker's ``classifier``
# encoder understands an ``nn.Sequential(preprocessing, timm_model)``.
#
# With a torchvision classifier instead of timm, and its own backbone as the encoder::
#
#     import torchvision
#     net = torchvision.models.resnet50(weights="IMAGENET1K_V2")
#     attr = RealTimeMaskAttribution(torch.nn.Sequential(Normalize(MEAN, STD), net))
num_classes = 1000 if NETWORK else len(WNIDS)
net = timm.create_model(CLASSIFIER, pretrained=NETWORK, num_classes=num_classes)
model = torch.nn.Sequential(Normalize(MEAN, STD), net).to(DEVICE)

# The paper's protocol resizes whole images (no centre crop), so the boxes stay aligned.
tf = transforms.Compose([transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)), transforms.ToTensor()])
train_set = datasets.ImageFolder(ROOT / "train", transform=tf)
loader = DataLoader(
    train_set,
    batch_size=BATCH,
    shuffle=True,
    num_workers=min(4, os.cpu_count() or 1) if NETWORK else 0,
    pin_memory=DEVICE == "cuda",
)

if not NETWORK:  # the stand-in classifier must first learn its task
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _epoch in range(1 if TINY else 4):
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb.to(DEVICE)), yb.to(DEVICE))
            opt.zero_grad()
            loss.backward()
            opt.step()
    print(f"stand-in classifier: last training loss {loss.item():.3f}")
model.eval()

# %%
# The masker: the paper's pretrained ResNet-50 encoder
# ----------------------------------------------------
# timm's ResNet-50 with ``pretrained=True`` downloads ImageNet weights, and the masker freezes
# them; ``preset="paper"`` builds the paper's decoder (768 channels halving, three bottlenecks
# per upsampler). A named encoder (``encoder="resnet50"``) would get the images as the
# classifier takes them, here in ``[0, 1]``, while its weights expect normalised ones, so we
# hand the masker the encoder as a module with its own ``Normalize`` in front. Offline,
# ``pretrained=False`` trains that encoder from scratch, and the default
# ``encoder="classifier"`` would reuse the classifier's backbone (and its ``Normalize``).
features = timm.create_model(ENCODER, pretrained=NETWORK, features_only=True)
encoder = torch.nn.Sequential(
    Normalize(features.pretrained_cfg["mean"], features.pretrained_cfg["std"]), features
)
attr = RealTimeMaskAttribution(model, encoder=encoder, pretrained=NETWORK, preset=PRESET)
attr.fit(loader, max_steps=MASKER_STEPS, device=DEVICE, progress=NETWORK)
print({k: round(v, 3) for k, v in attr.history[-1].items()})

# %%
# Explain validation images
# -------------------------
val_set = datasets.ImageFolder(ROOT / "val", transform=tf)
idx = list(range(0, len(val_set), max(1, len(val_set) // 6)))[:6]
x = torch.stack([val_set[i][0] for i in idx]).to(DEVICE)
y = torch.tensor([val_set[i][1] for i in idx], device=DEVICE)
masks = attr.mask(x, target=None)  # None: explain the predicted class
pred = model(x).argmax(-1)

fig, axes = plt.subplots(1, len(idx), figsize=(2.2 * len(idx), 2.6))
for ax, img, m, p, t in zip(axes, x.cpu(), masks.cpu(), pred.cpu(), y.cpu()):
    heat = m.permute(1, 2, 0).numpy()
    if heat.max() > 0:
        viz.visualize_image_attr(
            heat,
            img.permute(1, 2, 0).numpy(),
            method="blended_heat_map",
            sign="positive",
            plt_fig_axis=(fig, ax),
            use_pyplot=False,
        )
    ax.set_title(f"pred {int(p)} / true {int(t)}", fontsize=8)
    ax.axis("off")
plt.tight_layout()

# %%
# Localisation with the XML boxes
# -------------------------------
# :func:`~captum_realtime_mask.metrics.parse_voc_xml` reads an ILSVRC file, converts its
# 1-based corners to 0-based inclusive pixels and maps them to the resized image.
paths = [Path(val_set.samples[i][0]) for i in range(len(val_set))]
gt = [parse_voc_xml(ROOT / "val_xml" / f"{p.stem}.xml", size=IMAGE_SIZE).boxes for p in paths]
errors, scores, cb_errors, cb_scores = [], [], [], []
cb = centre_box(IMAGE_SIZE, IMAGE_SIZE)
for i in range(0, len(val_set), BATCH):
    xb = torch.stack([val_set[j][0] for j in range(i, min(i + BATCH, len(val_set)))]).to(DEVICE)
    yb = torch.tensor([val_set[j][1] for j in range(i, i + len(xb))], device=DEVICE)
    gb = [g.to(DEVICE) for g in gt[i : i + len(xb)]]
    mb = attr.mask(xb, target=yb)
    errors.append(localisation_error(mb, gb) * len(xb))
    scores.append(saliency_metric(model, xb, mb, target=yb))
    cb_errors.append(localisation_error(None, gb, boxes=cb) * len(xb))
    cb_scores.append(saliency_metric(model, xb, None, target=yb, boxes=cb))
n = len(val_set)
print(
    f"real-time mask: localisation error {float(sum(errors)) / n:.3f}, "
    f"saliency metric {float(torch.cat(scores).mean()):.3f}"
)
print(
    f"centre box:     localisation error {float(sum(cb_errors)) / n:.3f}, "
    f"saliency metric {float(torch.cat(cb_scores).mean()):.3f}"
)
