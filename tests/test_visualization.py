"""overlay_mask: hand-checked colours, shapes, dtypes, batches, and errors naming the argument."""

from __future__ import annotations

import builtins
import doctest

import numpy as np
import pytest
import torch

from captum_realtime_mask import visualization
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.visualization import BUILTIN_COLORMAPS, colormap_lut, overlay_mask

# jet by hand (matplotlib's segment data): 0 is dark blue (0, 0, 0.5), 1 dark red (0.5, 0, 0),
# and 0.5 falls in the green plateau: red (0.5 - 0.35) / 0.31, green 1, blue (0.65 - 0.5) / 0.31.
JET_0 = [0, 0, 128]  # round(0.5 * 255) = 127.5 -> 128 (round half to even)
JET_1 = [128, 0, 0]


def grey_image(value: float, size: int = 4) -> torch.Tensor:
    return torch.full((3, size, size), value)


def test_alpha_zero_is_the_image_and_alpha_one_the_colour():
    image = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(5, 6, generator=torch.Generator().manual_seed(1))
    out = overlay_mask(image, mask, alpha=0.0)
    expected = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(out, expected)
    # alpha 1: the colour map alone, whatever the image.
    black = overlay_mask(grey_image(0.0), torch.zeros(4, 4), alpha=1.0)
    white = overlay_mask(grey_image(1.0), torch.ones(4, 4), alpha=1.0)
    assert black[2, 3].tolist() == JET_0 and white[0, 0].tolist() == JET_1
    mid = overlay_mask(grey_image(0.3), torch.full((4, 4), 0.5), alpha=1.0, dtype="float32")
    # 0.5 lands on row 128 of 256: x = 128 / 255.
    x = 128 / 255
    expected_mid = [(x - 0.35) / 0.31, 1.0, (0.65 - x) / 0.31]
    np.testing.assert_allclose(mid[1, 1], expected_mid, atol=1e-6)


def test_a_known_pixel_at_half_alpha():
    # A white pixel with mask 0 at alpha 0.5: (1, 1, 1) / 2 + (0, 0, 0.5) / 2 = (0.5, 0.5, 0.75).
    out = overlay_mask(grey_image(1.0), torch.zeros(1, 4, 4), alpha=0.5, dtype="float32")
    np.testing.assert_allclose(out[0, 0], [0.5, 0.5, 0.75], atol=1e-7)
    assert overlay_mask(grey_image(1.0), torch.zeros(4, 4))[0, 0].tolist() == [128, 128, 191]


def test_shapes_dtypes_and_inputs_are_not_changed():
    image, mask = torch.rand(3, 8, 10), torch.rand(1, 8, 10)
    before = image.clone(), mask.clone()
    out = overlay_mask(image, mask)
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert torch.equal(image, before[0]) and torch.equal(mask, before[1])
    out = overlay_mask(image, mask, dtype="float32")
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    # The same picture from a tensor, an HWC float array, a uint8 array and a PIL image.
    u8 = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    from PIL import Image

    a = overlay_mask(u8, mask.numpy())
    b = overlay_mask(Image.fromarray(u8), mask[0])
    c = overlay_mask(u8.astype(np.float32) / 255, mask)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    # Grey (H, W) and one-channel images are drawn in RGB; RGBA loses its alpha.
    assert overlay_mask(np.zeros((8, 10)), mask).shape == (8, 10, 3)
    assert overlay_mask(torch.zeros(1, 8, 10), mask).shape == (8, 10, 3)
    rgba = np.concatenate([u8, np.zeros((8, 10, 1), np.uint8)], axis=-1)
    np.testing.assert_array_equal(overlay_mask(rgba, mask), a)


def test_a_batch_is_the_images_one_by_one():
    g = torch.Generator().manual_seed(0)
    images, masks = torch.rand(4, 3, 6, 6, generator=g), torch.rand(4, 1, 6, 6, generator=g)
    out = overlay_mask(images, masks, colormap="gray", alpha=0.3)
    assert out.shape == (4, 6, 6, 3)
    for i in range(4):
        np.testing.assert_array_equal(out[i], overlay_mask(images[i], masks[i], colormap="gray",
                                                           alpha=0.3))  # fmt: skip
    # (N, H, W) masks and (N, H, W, C) arrays too.
    frames = (images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    assert overlay_mask(frames, masks[:, 0]).shape == (4, 6, 6, 3)


def test_a_mask_of_another_size_is_resized_to_the_image():
    # A 2x2 mask over an 8x8 image: the left half salient. Bilinear resizing keeps the
    # outer columns at the mask's values.
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    out = overlay_mask(grey_image(0.0, 8), mask, alpha=1.0)
    assert out.shape == (8, 8, 3)
    assert out[3, 0].tolist() == JET_1 and out[3, 7].tolist() == JET_0
    frames = np.zeros((2, 16, 12, 3), np.uint8)
    assert overlay_mask(frames, torch.rand(2, 1, 4, 4)).shape == (2, 16, 12, 3)


def test_builtin_colormaps_match_matplotlib():
    matplotlib = pytest.importorskip("matplotlib")
    values = np.random.default_rng(0).random(2000)
    for name in BUILTIN_COLORMAPS:
        lut = colormap_lut(name)
        assert lut.shape == (256, 3) and lut.dtype == np.float32
        ours = lut[np.minimum((values * 256).astype(int), 255)]
        np.testing.assert_allclose(ours, matplotlib.colormaps[name](values)[:, :3], atol=1e-6)
    # Other names, Colormap objects and tables come through matplotlib or as given.
    assert colormap_lut("inferno").shape == (256, 3)
    np.testing.assert_array_equal(colormap_lut(matplotlib.colormaps["jet"]), colormap_lut("jet"))
    table = np.array([[0, 0, 0], [255, 0, 0]], dtype=np.uint8)
    out = overlay_mask(grey_image(0.0), torch.tensor([[0.0, 0.49], [0.5, 1.0]]), colormap=table,
                       alpha=1.0)  # fmt: skip
    assert [out[0, 0, 0], out[0, 3, 0], out[3, 0, 0], out[3, 3, 0]] == [0, 0, 255, 255]


def test_builtin_colormaps_need_no_matplotlib(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    visualization._named_lut.cache_clear()
    try:
        assert overlay_mask(grey_image(0.0), torch.ones(4, 4), alpha=1.0)[0, 0].tolist() == JET_1
        with pytest.raises(ImportError, match=r"captum-realtime-mask\[viz\]"):
            colormap_lut("inferno")
    finally:
        visualization._named_lut.cache_clear()


@pytest.mark.parametrize(
    ("kwargs", "argument", "words"),
    [
        ({"image": torch.rand(8, 8, 3)}, "image", "permute"),
        ({"image": np.random.rand(3, 8, 8)}, "image", "channels-last"),
        ({"image": torch.rand(3, 4, 4) * 2}, "image", "[0, 2"),
        ({"image": torch.full((3, 4, 4), float("nan"))}, "image", "[0, 1]"),
        ({"image": np.zeros((4, 4, 3), np.int32)}, "image", "int32"),
        ({"image": [[0.0]]}, "image", "PIL"),
        ({"image": torch.rand(3, 0, 4)}, "image", "non-empty"),
        ({"mask": torch.rand(2, 4, 4)}, "mask", "(1, H, W)"),
        ({"mask": torch.rand(4, 4) + 1}, "mask", "rescale"),
        ({"mask": torch.full((4, 4), float("nan"))}, "mask", "finite"),
        ({"mask": np.ones((4, 4), bool)}, "mask", "bool"),
        ({"mask": [[0.5]]}, "mask", "NumPy"),
        ({"alpha": 1.5}, "alpha", "[0, 1]"),
        ({"alpha": True}, "alpha", "bool"),
        ({"colormap": "no_such_map"}, "colormap", "no_such_map"),
        ({"colormap": np.zeros((4, 2))}, "colormap", "(K, 3)"),
        ({"colormap": np.full((4, 3), 2.0)}, "colormap", "[0, 1]"),
        ({"colormap": 3}, "colormap", "int"),
        ({"dtype": "uint16"}, "dtype", "'uint8'"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, argument, words):
    args = {"image": torch.rand(3, 4, 4), "mask": torch.rand(4, 4), **kwargs}
    with pytest.raises(InputError) as exc:
        overlay_mask(**args)
    assert exc.value.argument == argument
    assert words in exc.value.detail


def test_batch_masks_must_match_the_batch():
    with pytest.raises(InputError, match="N = 3") as exc:
        overlay_mask(torch.rand(3, 3, 4, 4), torch.rand(2, 1, 4, 4))
    assert exc.value.argument == "mask"


def test_doctests():
    assert doctest.testmod(visualization).failed == 0
