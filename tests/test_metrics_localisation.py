import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics import Metric, MetricCollection
from torchmetrics.utilities.data import dim_zero_cat

from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics import (
    LocalisationEvaluator,
    LocalisationResult,
    centre_box,
    localisation_details,
    localisation_error,
    max_box,
    pixel_box_iou,
)


def square_masks(n=1, size=8, rows=slice(0, 4), cols=slice(0, 4)):
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, rows, cols] = 1.0
    return mask


def test_known_iou_hit_and_miss():
    mask = square_masks(2)  # predicted box (0, 0, 3, 3): 16 px
    gt = torch.tensor([[0.0, 0.0, 3.0, 4.0], [2.0, 2.0, 5.0, 5.0]])  # IoU 16/20 and 4/28
    r = localisation_details(mask, gt)
    assert r.boxes.tolist() == [[0.0, 0.0, 3.0, 3.0]] * 2
    torch.testing.assert_close(r.ious, torch.tensor([0.8, 4 / 28]))
    assert r.hits.tolist() == [True, False]
    assert r.empty.tolist() == [False, False]
    torch.testing.assert_close(localisation_error(mask, gt), torch.tensor(0.5))


def test_iou_exactly_at_threshold_is_not_a_hit():
    mask = square_masks(1)  # 16 px
    gt = torch.tensor([[0.0, 0.0, 3.0, 7.0]])  # 32 px containing it: IoU 0.5
    r = localisation_details(mask, gt)
    assert r.ious.item() == pytest.approx(0.5)
    assert r.hits.tolist() == [False]
    assert localisation_details(mask, gt, iou_threshold=0.49).hits.tolist() == [True]


def test_hit_with_any_of_several_gt_boxes():
    mask = square_masks(3)
    far = [7.0, 7.0, 7.0, 7.0]
    gt = [
        torch.tensor([far, [0.0, 0.0, 3.0, 3.0]]),  # second box matches
        torch.tensor([far, far, [4.0, 4.0, 7.0, 7.0]]),  # none overlap
        torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0]]),  # 9/16 both: hit
    ]
    r = localisation_details(mask, gt)
    assert r.hits.tolist() == [True, False, True]
    torch.testing.assert_close(r.ious, torch.tensor([1.0, 0.0, 9 / 16]))
    torch.testing.assert_close(localisation_error(mask, gt), torch.tensor(1 / 3))
    # the same as an (N, K, 4) tensor
    padded = torch.stack([torch.tensor([far, [0.0, 0.0, 3.0, 3.0]])] * 3)
    assert localisation_details(mask, padded).hits.tolist() == [True] * 3


def test_threshold_selects_the_region():
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 0:4, 0:4] = 0.9
    mask[0, 0, 6:8, 6:8] = 0.6
    gt = [[0, 0, 3, 3]]
    assert localisation_details(mask, gt).boxes.tolist() == [[0.0, 0.0, 7.0, 7.0]]
    assert localisation_error(mask, gt).item() == 1.0
    assert localisation_error(mask, gt, threshold=0.7).item() == 0.0


def test_empty_map_uses_whole_image_and_is_flagged():
    mask = torch.zeros(2, 1, 8, 8)
    mask[1, 0, 0:4, 0:4] = 1.0
    gt = torch.tensor([[0.0, 0.0, 7.0, 6.0], [0.0, 0.0, 3.0, 3.0]])
    r = localisation_details(mask, gt)
    assert r.empty.tolist() == [True, False]
    assert r.boxes[0].tolist() == max_box(8, 8).tolist()
    torch.testing.assert_close(r.ious, torch.tensor([56 / 64, 1.0]))
    assert torch.isfinite(r.ious).all()
    centre = localisation_details(mask, gt, empty_fallback="centre")
    assert centre.boxes[0].tolist() == centre_box(8, 8).tolist()


def test_baselines_as_predicted_boxes():
    gt = [torch.tensor([[1.0, 1.0, 6.0, 6.0]]), torch.tensor([[0.0, 0.0, 7.0, 3.0]])]
    r = localisation_details(None, gt, boxes=centre_box(8, 8))  # (1, 1, 6, 6): 36 px
    torch.testing.assert_close(r.ious, torch.tensor([1.0, 18 / 50]))
    assert r.hits.tolist() == [True, False]
    assert r.empty.tolist() == [False, False]
    m = localisation_details(None, gt, boxes=max_box(8, 8))
    torch.testing.assert_close(m.ious, torch.tensor([36 / 64, 0.5]))
    assert m.hits.tolist() == [True, False]  # 0.5 is not above 0.5
    per_image = torch.stack([max_box(8, 8), centre_box(8, 8)])
    torch.testing.assert_close(
        localisation_details(None, gt, boxes=per_image).ious, torch.tensor([36 / 64, 18 / 50])
    )
    assert localisation_error(None, gt, boxes=[[1, 1, 6, 6], [0, 0, 7, 3]]).item() == 0.0


def test_normalisations_for_gradient_maps():
    grads = torch.randn(1, 3, 8, 8) * 1e-3
    grads[0, :, 2:4, 5:7] = 5.0
    gt = [[5, 2, 6, 3]]
    assert localisation_error(grads, gt, normalize="minmax").item() == 0.0
    grads[0, :, 2:4, 5:7] = -5.0
    assert localisation_error(grads, gt, normalize="abs_minmax").item() == 0.0
    assert localisation_error(grads, gt, normalize="minmax").item() == 1.0


def test_result_error_property_and_types():
    r = localisation_details(square_masks(4), [[0, 0, 3, 3]] * 2 + [[4, 4, 7, 7]] * 2)
    assert isinstance(r, LocalisationResult)
    assert r.error.item() == 0.5
    assert r.hits.dtype == torch.bool and r.ious.dtype == torch.float32


def test_batch_size_independence():
    torch.manual_seed(3)
    masks = torch.rand(6, 1, 16, 16) ** 3
    gt = [torch.tensor([[i, i, i + 8, i + 8]], dtype=torch.float32) for i in range(6)]
    full = localisation_details(masks, gt)
    ev = LocalisationEvaluator()
    for start in range(0, 6, 4):
        ev.update(masks[start : start + 4], gt[start : start + 4])
    assert torch.equal(ev.hits, full.hits)
    torch.testing.assert_close(ev.ious, full.ious)
    assert torch.equal(ev.boxes, full.boxes)
    torch.testing.assert_close(ev.compute(), full.error)


def test_evaluator_accumulates_and_resets():
    ev = LocalisationEvaluator(iou_threshold=0.5)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="update"):
        ev.compute()
    ev.update(square_masks(2), torch.tensor([[0.0, 0.0, 3.0, 3.0], [4.0, 4.0, 7.0, 7.0]]))
    ev.update(torch.zeros(1, 8, 8), [[0, 0, 7, 7]])  # empty map: whole image, a hit
    ev.update(None, [[1, 1, 6, 6]], boxes=centre_box(8, 8))
    assert ev.num_examples == 4
    assert ev.hits.tolist() == [True, False, True, True]
    assert ev.empty.tolist() == [False, False, True, False]
    assert ev.boxes.shape == (4, 4)
    torch.testing.assert_close(ev.compute(), torch.tensor(0.25))
    ev.reset()
    assert ev.num_examples == 0 and ev.hits.shape == (0,) and ev.boxes.shape == (0, 4)


def test_device_follows_attributions():
    r = localisation_details(square_masks(2), [[0, 0, 3, 3]] * 2)
    assert r.hits.device == r.ious.device == r.boxes.device == torch.device("cpu")


@pytest.mark.gpu
def test_localisation_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    mask = square_masks(2).cuda()
    r = localisation_details(mask, [[0, 0, 3, 3], [4, 4, 7, 7]])
    assert r.hits.is_cuda and r.ious.is_cuda and r.boxes.is_cuda
    assert r.hits.tolist() == [True, False]


def test_several_boxes_of_one_image_error_says_how_to_pass_them():
    mask = square_masks(1)
    gt = torch.tensor([[0, 0, 3, 3], [4, 4, 7, 7]])
    with pytest.raises(
        InputError, match=r"^gt_boxes: must describe 1 images.*\(N, K, 4\).*`\[boxes\]`"
    ):
        localisation_error(mask, gt)
    assert float(localisation_error(mask, [gt])) == 0.0
    assert float(localisation_error(mask, gt[None])) == 0.0


@pytest.mark.gpu
def test_evaluator_states_stay_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    ev = LocalisationEvaluator()
    torch.testing.assert_close(
        ev(square_masks(2).cuda(), [[0, 0, 3, 3], [4, 4, 7, 7]]).cpu(), torch.tensor(0.5)
    )
    assert ev.hits.is_cuda and ev.boxes.is_cuda and ev.compute().is_cuda


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((square_masks(2), [[0, 0, 3, 3]] * 3), {}, "2 images"),
        ((square_masks(1), [[0, 0, 8, 3]]), {}, "x2 <= 7"),
        ((square_masks(1), [torch.zeros(0, 4)]), {}, "no box"),
        ((square_masks(1), [[0, 0, 3, 3]]), {"iou_threshold": 2.0}, "iou_threshold"),
        ((square_masks(1), [[0, 0, 3, 3]]), {"boxes": [[0, 0, 3, 3]]}, "exactly one"),
        ((None, [[0, 0, 3, 3]]), {}, "exactly one"),
        ((None, [[0, 0, 3, 3]]), {"boxes": [torch.zeros(2, 4)]}, "exactly one predicted box"),
        ((torch.rand(8, 8), [[0, 0, 3, 3]]), {}, "attributions"),
        ((square_masks(1), "boxes"), {}, "gt_boxes"),
    ],
)
def test_bad_input_raises_input_error(args, kwargs, match):
    with pytest.raises(InputError, match=match):
        localisation_error(*args, **kwargs)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 15), st.integers(0, 15), st.integers(0, 15), st.integers(0, 15))
def test_map_of_a_box_localises_that_box(x1, x2, y1, y2):
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    mask = torch.zeros(1, 16, 16)
    mask[0, y1 : y2 + 1, x1 : x2 + 1] = 1.0
    box = torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32)
    r = localisation_details(mask, box)
    assert r.boxes.tolist() == box.tolist()
    assert r.ious.item() == pytest.approx(1.0) and r.hits.item()
    assert r.ious.item() == pytest.approx(pixel_box_iou(r.boxes, box).max().item())


# ------------------------------------------------------- constructor checks


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"iou_threshold": 50}, "iou_threshold"),
        ({"threshold": "0.5"}, "threshold"),
        ({"normalize": "min_max"}, "normalize"),
        ({"empty_fallback": "center"}, "empty_fallback"),
        ({"min_pixels": -3}, "min_pixels"),
    ],
)
def test_constructor_validates_its_arguments(kwargs, name):
    with pytest.raises(InputError, match=f"^{name}: "):
        LocalisationEvaluator(**kwargs)


def test_valid_constructor_options_still_score():
    evaluator = LocalisationEvaluator(normalize="minmax", empty_fallback="centre")
    result = evaluator.update(torch.ones(2, 1, 4, 4), [0, 0, 3, 3])
    assert bool(result.empty.all())  # constant maps normalise to zeros: the centre box
    assert evaluator.boxes.tolist() == [centre_box(4, 4).tolist()] * 2


# ------------------------------------------------------- a torchmetrics Metric

GT = torch.tensor([[0.0, 0.0, 3.0, 3.0], [4.0, 4.0, 7.0, 7.0]])  # square_masks: hit, miss


def test_is_a_torchmetrics_metric_with_cat_states():
    ev = LocalisationEvaluator()
    assert isinstance(ev, Metric)
    assert ev.higher_is_better is False and ev.full_state_update is False
    names = {"hit_batches", "iou_batches", "box_batches", "empty_batches"}
    assert ev._reductions == dict.fromkeys(names, dim_zero_cat)
    assert ev.metric_state == dict.fromkeys(names, [])
    assert ev.hits.dtype == torch.bool and ev.ious.shape == (0,) and ev.boxes.shape == (0, 4)


def test_forward_returns_the_batch_error_and_accumulates():
    ev = LocalisationEvaluator()
    torch.testing.assert_close(ev(square_masks(2), GT), torch.tensor(0.5))
    torch.testing.assert_close(ev(None, [[1, 1, 6, 6]], boxes=centre_box(8, 8)), torch.tensor(0.0))
    assert ev.num_examples == 3 and ev.update_count == 2
    assert ev.hits.tolist() == [True, False, True]
    torch.testing.assert_close(ev.ious, torch.tensor([1.0, 0.0, 1.0]))
    torch.testing.assert_close(ev.compute(), torch.tensor(1 / 3))
    result = ev.update(torch.zeros(1, 8, 8), [[0, 0, 7, 7]])  # empty map: whole image, a hit
    assert isinstance(result, LocalisationResult) and result.empty.tolist() == [True]
    torch.testing.assert_close(ev.compute(), torch.tensor(0.25))
    assert ev.empty.tolist() == [False, False, False, True]


def test_reset_forgets_every_image():
    ev = LocalisationEvaluator()
    ev.update(square_masks(2), GT)
    ev.reset()
    assert ev.num_examples == 0 and ev.update_count == 0 and ev.boxes.shape == (0, 4)
    ev.update(square_masks(1), GT[:1])
    torch.testing.assert_close(ev.compute(), torch.tensor(0.0))


def test_merge_state_combines_two_evaluators():
    a, b = LocalisationEvaluator(), LocalisationEvaluator()
    a.update(square_masks(2), GT)  # hit, miss
    b.update(None, [[1, 1, 6, 6]], boxes=centre_box(8, 8))  # hit
    a.merge_state(b)
    assert a.num_examples == 3 and sorted(a.hits.tolist()) == [False, True, True]
    torch.testing.assert_close(a.compute(), torch.tensor(1 / 3))


def test_compute_gathers_every_process_images():
    other = LocalisationEvaluator()
    other.update(square_masks(2), GT[[1, 1]])  # two misses
    states = [other.hits, other.ious, other.boxes, other.empty]
    queue = list(states)
    ev = LocalisationEvaluator(
        dist_sync_fn=lambda tensor, group=None: [tensor, queue.pop(0)],
        distributed_available_fn=lambda: True,
    )
    ev.update(square_masks(2), GT)  # hit, miss
    torch.testing.assert_close(ev.compute(), torch.tensor(0.75))
    assert ev.num_examples == 2  # the local state is restored after compute
    queue[:] = [torch.tensor([])] * 4  # what torchmetrics sends from a process without images
    ev.sync(dist_sync_fn=ev.dist_sync_fn)
    assert ev.hits.tolist() == [True, False] and ev.boxes.shape == (2, 4)
    ev.unsync()


def test_a_process_without_images_reads_the_others():
    other = LocalisationEvaluator()
    other.update(square_masks(2), GT)
    queue = [other.hits, other.ious, other.boxes, other.empty]
    ev = LocalisationEvaluator(distributed_available_fn=lambda: True)
    ev.sync(dist_sync_fn=lambda tensor, group=None: [tensor, queue.pop(0)])
    assert ev.hits.tolist() == [True, False] and ev.empty.tolist() == [False, False]
    assert ev.boxes.tolist() == [[0.0, 0.0, 3.0, 3.0]] * 2
    ev.unsync()
    assert ev.num_examples == 0


def test_in_a_metric_collection_on_its_own_keyword_arguments():
    metrics = MetricCollection([LocalisationEvaluator()], prefix="val_")
    batch = metrics(attributions=square_masks(2), gt_boxes=GT)
    torch.testing.assert_close(batch["val_LocalisationEvaluator"], torch.tensor(0.5))
    metrics.update(attributions=None, gt_boxes=GT, boxes=GT)  # two hits
    torch.testing.assert_close(metrics.compute()["val_LocalisationEvaluator"], torch.tensor(0.25))


def test_localisation_error_takes_numpy_boxes():
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 0:4, 0:4] = 1.0
    boxes = [[0, 0, 3, 3], [4, 4, 7, 7]]
    as_array = float(localisation_error(mask, np.array(boxes)))
    assert as_array == 0.5 == float(localisation_error(mask, boxes))
