import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics import (
    MapBoxes,
    attributions_to_boxes,
    box_area_fraction,
    centre_box,
    max_box,
    normalize_attributions,
    pixel_box_iou,
)
from captum_realtime_mask.metrics.boxes import as_box_tensor, box_count, box_sets, check_map_options

# ---------------------------------------------------------------- normalisation


def test_normalize_none_takes_channel_mean_of_masks():
    mask = torch.rand(2, 1, 5, 6)
    out = normalize_attributions(mask.expand(2, 3, 5, 6), "none")
    assert out.shape == (2, 5, 6)
    torch.testing.assert_close(out, mask[:, 0])
    torch.testing.assert_close(normalize_attributions(mask[:, 0]), mask[:, 0])
    torch.testing.assert_close(normalize_attributions((mask,)), mask[:, 0])


def test_normalize_minmax_hand_computed_per_image():
    a = torch.tensor([[[1.0, 3.0], [5.0, 9.0]], [[-4.0, 0.0], [0.0, 4.0]]])
    a = a.unsqueeze(1).repeat(1, 2, 1, 1) / 2  # channel sum gives back the values above
    out = normalize_attributions(a, "minmax")
    expected = torch.tensor([[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.5], [0.5, 1.0]]])
    torch.testing.assert_close(out, expected)


def test_normalize_abs_minmax_uses_magnitude_of_channel_sum():
    a = torch.tensor([[[[-4.0, 1.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]]])  # sum -4, 2, 2, 0
    out = normalize_attributions(a, "abs_minmax")
    torch.testing.assert_close(out, torch.tensor([[[1.0, 0.5], [0.5, 0.0]]]))


def test_normalize_constant_map_gives_zeros_not_nan():
    out = normalize_attributions(torch.full((1, 3, 4, 4), 7.0), "minmax")
    assert torch.equal(out, torch.zeros(1, 4, 4))
    boxes, empty = attributions_to_boxes(torch.full((1, 3, 4, 4), 7.0), normalize="minmax")
    assert empty.tolist() == [True]


def test_normalize_callable_and_its_checks():
    a = torch.rand(2, 3, 4, 4)
    out = normalize_attributions(a, lambda t: t.amax(dim=1))
    torch.testing.assert_close(out, a.amax(dim=1))
    with pytest.raises(InputError, match="must return maps shaped"):
        normalize_attributions(a, lambda t: t)


def test_normalize_bool_mask_is_accepted():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1, 2] = True
    boxes, _ = attributions_to_boxes(mask)
    assert boxes.tolist() == [[2.0, 1.0, 2.0, 1.0]]


@pytest.mark.parametrize(
    ("attributions", "normalize", "match"),
    [
        (torch.rand(2, 4, 4), "zscore", "^normalize: expected one of 'none' or 'minmax'"),
        (torch.rand(4, 4), "none", r"\(N, C, H, W\)"),
        (torch.rand(1, 1, 1, 4, 4), "none", "attributions"),
        (torch.full((1, 4, 4), float("nan")), "none", "NaN"),
        ([1.0, 2.0], "none", "must be a Tensor"),
        ((torch.rand(1, 4, 4), torch.rand(1, 4, 4)), "none", "1-tuple"),
    ],
)
def test_normalize_rejects_bad_input(attributions, normalize, match):
    with pytest.raises(InputError, match=match):
        normalize_attributions(attributions, normalize)


# ---------------------------------------------------------------- boxes from maps


def test_single_pixel_gives_inclusive_box():
    mask = torch.zeros(1, 1, 8, 10)
    mask[0, 0, 5, 3] = 1.0  # row 5, column 3
    boxes, empty = attributions_to_boxes(mask)
    assert boxes.tolist() == [[3.0, 5.0, 3.0, 5.0]]
    assert empty.tolist() == [False]
    assert box_area_fraction(boxes, 8, 10).tolist() == pytest.approx([1 / 80])


def test_tightest_box_around_two_blobs_and_strict_threshold():
    mask = torch.zeros(1, 1, 10, 10)
    mask[0, 0, 1, 2] = 0.9
    mask[0, 0, 6, 7] = 0.8
    mask[0, 0, 9, 9] = 0.5  # equal to the threshold: not above it
    boxes, _ = attributions_to_boxes(mask, threshold=0.5)
    assert boxes.tolist() == [[2.0, 1.0, 7.0, 6.0]]
    boxes, _ = attributions_to_boxes(mask, threshold=0.85)
    assert boxes.tolist() == [[2.0, 1.0, 2.0, 1.0]]


def test_empty_map_falls_back_to_max_box_and_is_flagged():
    mask = torch.zeros(2, 1, 6, 8)
    mask[1, 0, 2:4, 2:4] = 1.0
    result = attributions_to_boxes(mask)
    assert isinstance(result, MapBoxes)
    assert result.boxes.tolist() == [[0.0, 0.0, 7.0, 5.0], [2.0, 2.0, 3.0, 3.0]]
    assert result.empty.tolist() == [True, False]
    assert torch.isfinite(result.boxes).all()


def test_empty_map_centre_fallback_and_min_pixels():
    mask = torch.zeros(1, 1, 224, 224)
    mask[0, 0, 10:20, 10:20] = 1.0  # 100 pixels pass
    boxes, empty = attributions_to_boxes(mask, min_pixels=300, empty_fallback="centre")
    assert empty.tolist() == [True]
    assert boxes[0].tolist() == centre_box(224, 224).tolist()
    boxes, empty = attributions_to_boxes(mask, min_pixels=100)
    assert empty.tolist() == [False]
    assert boxes.tolist() == [[10.0, 10.0, 19.0, 19.0]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": "0.5"}, "threshold"),
        ({"min_pixels": 0}, "min_pixels"),
        ({"empty_fallback": "center"}, "empty_fallback"),
    ],
)
def test_attributions_to_boxes_rejects_bad_options(kwargs, match):
    with pytest.raises(InputError, match=match):
        attributions_to_boxes(torch.rand(1, 1, 4, 4), **kwargs)


# ---------------------------------------------------------------- IoU, area, baselines


def test_pixel_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 3.0, 3.0]])  # 16 px
    b = torch.tensor(
        [
            [0.0, 0.0, 3.0, 3.0],  # same: 1
            [2.0, 2.0, 5.0, 5.0],  # 2x2 overlap: 4 / (16 + 16 - 4)
            [4.0, 0.0, 7.0, 3.0],  # touching, no shared pixel: 0
            [3.0, 3.0, 3.0, 3.0],  # single pixel inside: 1 / 16
        ]
    )
    iou = pixel_box_iou(a, b)
    assert iou.shape == (1, 4)
    torch.testing.assert_close(iou, torch.tensor([[1.0, 4 / 28, 0.0, 1 / 16]]))
    # a single-pixel box with itself: torchvision's edge convention would give 0 / 0
    assert pixel_box_iou(b[3], b[3]).item() == 1.0


def test_pixel_box_iou_rejects_reversed_boxes():
    with pytest.raises(InputError, match="x1 <= x2"):
        pixel_box_iou(torch.tensor([3.0, 0.0, 1.0, 1.0]), torch.tensor([0.0, 0.0, 1.0, 1.0]))
    with pytest.raises(InputError, match="last dimension"):
        pixel_box_iou(torch.zeros(2, 3), torch.zeros(1, 4))


def test_box_area_fraction_hand_computed():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [2.0, 1.0, 4.0, 1.0]])
    torch.testing.assert_close(box_area_fraction(boxes, 10, 20), torch.tensor([0.5, 3 / 200]))
    b64 = boxes.double()
    assert box_area_fraction(b64, 10, 20).dtype == torch.float64


def test_box_area_fraction_float16_does_not_overflow():
    whole = torch.tensor([[0.0, 0.0, 255.0, 255.0], [0.0, 0.0, 127.0, 255.0]])
    out = box_area_fraction(whole.half(), 256, 256)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, torch.tensor([1.0, 0.5], dtype=torch.float16))
    torch.testing.assert_close(box_area_fraction(whole.double(), 256, 256).float(), out.float())


def test_centre_and_max_box_hand_computed():
    assert max_box(6, 8).tolist() == [0.0, 0.0, 7.0, 5.0]
    assert centre_box(224, 224).tolist() == [33.0, 33.0, 190.0, 190.0]  # 158 px sides
    assert centre_box(10, 20, area_fraction=0.25).tolist() == [5.0, 2.0, 14.0, 6.0]
    assert centre_box(10, 10, area_fraction=1.0).tolist() == max_box(10, 10).tolist()
    assert centre_box(1, 1).tolist() == [0.0, 0.0, 0.0, 0.0]
    assert max_box(3, 3).dtype == torch.float32


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 5), "height"),
        ((5, 2.5), "width"),
        ((5, 5, 0.0), "area_fraction"),
        ((5, 5, 1.5), "area_fraction"),
    ],
)
def test_baseline_boxes_reject_bad_sizes(args, match):
    with pytest.raises(InputError, match=match):
        centre_box(*args)


# ---------------------------------------------------------------- shared helpers


def test_check_map_options_converts_and_names_the_argument():
    assert check_map_options(np.float32(0.25), "abs_minmax", "centre", np.int64(300)) == (
        0.25,
        "abs_minmax",
        "centre",
        300,
    )
    fn = lambda a: a.sum(1)  # noqa: E731
    assert check_map_options(1, fn, "max", 1)[1] is fn
    with pytest.raises(InputError, match=r"^normalize: .*Hint: use \"none\" for masks"):
        check_map_options(0.5, "zscore", "max", 1)
    with pytest.raises(InputError, match="^empty_fallback: expected one of 'max' or 'centre'"):
        check_map_options(0.5, "none", "center", 1)
    with pytest.raises(InputError, match="^threshold: expected a finite real number"):
        check_map_options(math.inf, "none", "max", 1)
    with pytest.raises(InputError, match="^min_pixels: expected a positive int"):
        check_map_options(0.5, "none", "max", True)


def test_box_count_and_box_sets_read_every_format():
    one = [0, 0, 1, 1]
    assert box_count(one) is None and box_count(torch.tensor(one)) is None
    assert box_count(torch.zeros(3, 4)) == 3 and box_count(np.zeros((2, 5, 4))) == 2
    assert box_count([one, one]) == 2 and box_count([torch.zeros(2, 4)]) == 1
    cpu = torch.device("cpu")
    shared = box_sets(one, 2, "boxes", cpu)
    assert [b.tolist() for b in shared] == [[[0.0, 0.0, 1.0, 1.0]]] * 2
    ragged = box_sets([torch.tensor(one), torch.tensor([one, [1, 1, 2, 2]])], 2, "boxes", cpu)
    assert [b.shape[0] for b in ragged] == [1, 2] and ragged[1].dtype == torch.float32
    with pytest.raises(InputError, match=r"^boxes: for image 1 holds the box .*x2 <= 1"):
        box_sets([one, [0, 0, 2, 1]], 2, "boxes", cpu, size=(2, 2))
    assert as_box_tensor([[1, 2, 3, 4]], "b").dtype == torch.float32
    with pytest.raises(InputError, match="^b: must hold boxes"):
        as_box_tensor([1, 2, 3], "b")


# ---------------------------------------------------------------- properties

sizes = st.integers(min_value=1, max_value=12)


@st.composite
def maps(draw):
    h, w = draw(sizes), draw(sizes)
    flat = draw(st.lists(st.floats(0.0, 1.0), min_size=h * w, max_size=h * w))
    return torch.tensor(flat, dtype=torch.float32).reshape(1, 1, h, w)


@st.composite
def boxes_in(draw, h=16, w=16):
    x1 = draw(st.integers(0, w - 1))
    x2 = draw(st.integers(x1, w - 1))
    y1 = draw(st.integers(0, h - 1))
    y2 = draw(st.integers(y1, h - 1))
    return torch.tensor([x1, y1, x2, y2], dtype=torch.float32)


@settings(max_examples=60, deadline=None)
@given(maps(), st.floats(0.0, 0.99))
def test_box_contains_every_passing_pixel_and_is_tight(mask, threshold):
    boxes, empty = attributions_to_boxes(mask, threshold)
    above = mask[0, 0] > threshold
    x1, y1, x2, y2 = (int(v) for v in boxes[0])
    _, h, w = mask.shape[1:]
    assert 0 <= x1 <= x2 < w and 0 <= y1 <= y2 < h
    if not above.any():
        assert bool(empty[0]) and (x1, y1, x2, y2) == (0, 0, w - 1, h - 1)
        return
    assert not bool(empty[0])
    inside = torch.zeros_like(above)
    inside[y1 : y2 + 1, x1 : x2 + 1] = True
    assert not (above & ~inside).any()  # contains all
    # tight: every edge of the box touches a passing pixel
    assert above[y1, x1 : x2 + 1].any() and above[y2, x1 : x2 + 1].any()
    assert above[y1 : y2 + 1, x1].any() and above[y1 : y2 + 1, x2].any()
    # area matches the pixel count of the box
    area = box_area_fraction(boxes, h, w).item()
    assert area == pytest.approx(inside.sum().item() / (h * w))


@settings(max_examples=80, deadline=None)
@given(boxes_in(), boxes_in())
def test_iou_symmetric_bounded_and_matches_pixel_sets(a, b):
    ab = pixel_box_iou(a, b).item()
    ba = pixel_box_iou(b, a).item()
    assert ab == pytest.approx(ba)
    assert 0.0 <= ab <= 1.0
    assert pixel_box_iou(a, a).item() == pytest.approx(1.0)

    def pixels(box):
        m = torch.zeros(16, 16, dtype=torch.bool)
        x1, y1, x2, y2 = (int(v) for v in box)
        m[y1 : y2 + 1, x1 : x2 + 1] = True
        return m

    pa, pb = pixels(a), pixels(b)
    expected = (pa & pb).sum().item() / (pa | pb).sum().item()
    assert ab == pytest.approx(expected, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.floats(0.01, 1.0))
def test_centre_box_inside_centred_and_close_to_requested_area(h, w, fraction):
    x1, y1, x2, y2 = centre_box(h, w, fraction).tolist()
    assert 0 <= x1 <= x2 <= w - 1 and 0 <= y1 <= y2 <= h - 1
    # centred to within half a pixel on each axis
    assert abs(x1 - (w - 1 - x2)) <= 1 and abs(y1 - (h - 1 - y2)) <= 1
    bw, bh = x2 - x1 + 1, y2 - y1 + 1
    assert abs(bw - w * math.sqrt(fraction)) <= 0.5 + 1e-9 or bw == 1
    assert abs(bh - h * math.sqrt(fraction)) <= 0.5 + 1e-9 or bh == 1
