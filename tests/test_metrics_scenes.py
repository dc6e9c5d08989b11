import doctest
import math

import pytest
import torch
from torchmetrics import Metric

from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics import (
    AbsentClassArea,
    ClassSelectivity,
    PointingGame,
    SceneLocalisationEvaluator,
    absent_class_area,
    absent_class_area_details,
    class_selectivity,
    class_selectivity_details,
    pointing_game,
    pointing_game_details,
    pointing_tolerance,
    scene_localisation_details,
    scene_localisation_error,
)
from captum_realtime_mask.metrics import scenes as scenes_module

TOP_LEFT = [0.0, 0.0, 3.0, 3.0]  # 16 px
BOTTOM_RIGHT = [4.0, 4.0, 7.0, 7.0]  # 16 px


def test_per_object_localisation_hit_miss_and_unscored_pairs():
    maps = torch.zeros(2, 3, 8, 8)
    maps[0, 0, 0:4, 0:4] = 1.0  # class 3 -> (0, 0, 3, 3): IoU 1 with its box, hit
    maps[0, 1, 0:5, 0:5] = 1.0  # class 5 -> (0, 0, 4, 4): IoU 1/40 with (4, 4, 7, 7), miss
    maps[0, 2] = 1.0  # class 9: absent from image 0, not scored
    maps[1, 0, 4:8, 4:8] = 1.0  # image 1, class 5 -> IoU 16/20 with (4, 3, 7, 7): hit
    target = torch.tensor([[3, 5, 9], [5, -1, -1]])  # image 1 requests one class
    boxes = [torch.tensor([TOP_LEFT, BOTTOM_RIGHT]), torch.tensor([[4.0, 3.0, 7.0, 7.0], TOP_LEFT])]
    labels = [torch.tensor([3, 5]), torch.tensor([5, 8])]  # class 8 present, not requested
    r = scene_localisation_details(maps, target, boxes, labels)
    assert r.image.tolist() == [0, 0, 1]
    assert r.label.tolist() == [3, 5, 5]
    assert r.boxes.tolist() == [TOP_LEFT, [0.0, 0.0, 4.0, 4.0], BOTTOM_RIGHT]
    torch.testing.assert_close(r.ious, torch.tensor([1.0, 1 / 40, 0.8]))
    assert r.hits.tolist() == [True, False, True]
    assert r.empty.tolist() == [False, False, False]
    torch.testing.assert_close(
        scene_localisation_error(maps, target, boxes, labels), torch.tensor(1 / 3)
    )
    # a stricter IoU threshold turns the 0.8 into a miss
    assert scene_localisation_details(
        maps, target, boxes, labels, iou_threshold=0.8
    ).hits.tolist() == [
        True,
        False,
        False,
    ]


def test_per_object_localisation_thresholds_each_map_and_any_box_of_the_class():
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 0:4, 0:4] = 0.9
    maps[0, 0, 6:8, 6:8] = 0.6  # above 0.5: the box is the whole image
    boxes = [[[7, 7, 7, 7], TOP_LEFT]]  # two objects of class 2: the second matches
    labels = [[2, 2]]
    assert scene_localisation_details(maps, [[2]], boxes, labels).hits.tolist() == [False]
    r = scene_localisation_details(maps, [[2]], boxes, labels, threshold=0.7)
    assert r.boxes.tolist() == [TOP_LEFT]
    assert r.ious.tolist() == [1.0] and r.hits.tolist() == [True]
    # an empty map gets the fallback box and is flagged
    r = scene_localisation_details(torch.zeros(1, 1, 8, 8), [[2]], boxes, labels)
    assert r.empty.tolist() == [True] and r.boxes.tolist() == [[0.0, 0.0, 7.0, 7.0]]


def test_pointing_game_hit_miss_and_strict_tolerance():
    maps = torch.zeros(4, 1, 8, 8)
    maps[:, 0, 6, 2] = 1.0  # point (x, y) = (2, 6)
    boxes = torch.tensor(
        [
            [0.0, 5.0, 3.0, 7.0],  # contains the point: distance 0
            [4.0, 6.0, 7.0, 7.0],  # 2 columns right: distance 2
            [3.0, 0.0, 7.0, 4.0],  # 1 column, 2 rows: distance sqrt(5)
            [4.0, 0.0, 7.0, 3.0],  # 2 columns, 3 rows: distance sqrt(13)
        ]
    )
    labels = torch.tensor([0, 1, 2, 3])  # (N,): one object per image
    target = labels[:, None]
    r = pointing_game_details(maps, target, boxes, labels, tolerance=2)
    assert r.points.tolist() == [[2, 6]] * 4
    assert r.hits.tolist() == [True, False, False, False]  # 2 < 2 is false
    assert pointing_game_details(maps, target, boxes, labels, 2.5).hits.tolist() == [
        True,
        True,
        True,
        False,
    ]
    # inside the box always hits, even with no tolerance
    assert pointing_game_details(maps, target, boxes, labels, 0).hits.tolist() == [
        True,
        False,
        False,
        False,
    ]


def test_pointing_game_tie_takes_the_first_maximum_in_raster_order():
    maps = torch.zeros(1, 2, 8, 8)
    maps[0, 0, 6, 1] = maps[0, 0, 1, 6] = 1.0  # rows 1 and 6 tie: row 1 first -> (6, 1)
    maps[0, 1, 3, 5] = maps[0, 1, 3, 2] = 1.0  # same row: the left-most -> (2, 3)
    boxes = [[[0, 5, 2, 7], [1, 2, 3, 4]]]  # class 0 around (1, 6), class 1 around (2, 3)
    r = pointing_game_details(maps, [[0, 1]], boxes, [[0, 1]], tolerance=1)
    assert r.points.tolist() == [[6, 1], [2, 3]]
    assert r.hits.tolist() == [False, True]


def test_pointing_tolerance_scales_with_the_shorter_side():
    assert pointing_tolerance(224, 224) == 15.0
    assert pointing_tolerance(112, 300) == 7.5
    assert pointing_tolerance(8, 8) == pytest.approx(15 * 8 / 224)
    assert pointing_tolerance(112, 300, 4) == 4.0
    maps = torch.zeros(2, 1, 112, 300)
    maps[0, 0, 25, 37] = 1.0  # 7 columns right of the box: 49 < 7.5 ** 2, hit
    maps[1, 0, 25, 38] = 1.0  # 8 columns: 64 > 56.25, miss
    boxes = [[20, 20, 30, 30]] * 2
    r = pointing_game_details(maps, [[0], [0]], boxes, [[0], [0]])
    assert r.tolerance == 7.5
    assert r.hits.tolist() == [True, False]
    assert pointing_game_details(maps, [[0], [0]], boxes, [[0], [0]], 15).hits.tolist() == [
        True,
        True,
    ]


def test_pointing_game_averages_per_class_accuracies():
    maps = torch.zeros(3, 1, 8, 8)
    maps[:, 0, 1, 1] = 1.0  # point (1, 1)
    boxes = torch.tensor([TOP_LEFT, BOTTOM_RIGHT, TOP_LEFT])
    labels = torch.tensor([0, 0, 1])  # class 0: 1 hit in 2; class 1: 1 in 1
    r = pointing_game_details(maps, labels[:, None], boxes, labels, tolerance=1)
    assert r.hits.tolist() == [True, False, True]
    assert r.classes.tolist() == [0, 1]
    torch.testing.assert_close(r.class_accuracies, torch.tensor([0.5, 1.0]))
    # the mean of 0.5 and 1, not the pooled 2/3
    torch.testing.assert_close(
        pointing_game(maps, labels[:, None], boxes, labels, tolerance=1), torch.tensor(0.75)
    )


def test_class_selectivity_mean_versus_sum():
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 0:2, 0:2] = 1.0  # class 1's 2x2 box: sum 4, mean 1
    maps[0, 0, 4:8, 4:8] = 0.5  # class 2's 4x4 box: sum 8, mean 0.5
    boxes, labels = [[[0, 0, 1, 1], BOTTOM_RIGHT]], [[1, 2]]
    r = class_selectivity_details(maps, [[1]], boxes, labels)
    assert r.inside.tolist() == [1.0] and r.other.tolist() == [0.5]
    assert r.selective.tolist() == [True]
    r = class_selectivity_details(maps, [[1]], boxes, labels, compare="sum")
    assert r.inside.tolist() == [4.0] and r.other.tolist() == [8.0]
    assert r.selective.tolist() == [False]
    assert class_selectivity(maps, [[1]], boxes, labels, "sum").item() == 0.0


def test_class_selectivity_ties_fail_and_images_without_another_class_are_skipped():
    maps = torch.ones(3, 2, 8, 8)  # constant maps: equal means everywhere
    maps[1, 0, 0:4, 0:4] = 2.0  # image 1, class 1: mean 2 in its box, 1 elsewhere
    boxes = [[TOP_LEFT, BOTTOM_RIGHT]] * 2 + [[TOP_LEFT, [4, 4, 5, 5]]]
    labels = [[1, 2], [1, 2], [1, 1]]  # image 2: two objects, one class, not scored
    target = [[1, 2], [1, 2], [1, -1]]
    r = class_selectivity_details(maps, target, boxes, labels)
    assert r.image.tolist() == [0, 0, 1, 1]
    assert r.label.tolist() == [1, 2, 1, 2]
    assert r.selective.tolist() == [False, False, True, False]
    torch.testing.assert_close(r.inside, torch.tensor([1.0, 1.0, 2.0, 1.0]))
    torch.testing.assert_close(r.other, torch.tensor([1.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(class_selectivity(maps, target, boxes, labels), torch.tensor(0.25))


def test_class_selectivity_compares_with_each_other_object():
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 0:2, 0:2] = 0.5  # class 0, mean 0.5
    maps[0, 0, 6:8, 6:8] = 0.75  # one of the two class-3 objects: mean 0.75 > 0.5
    boxes = [[[0, 0, 1, 1], [0, 6, 1, 7], [6, 6, 7, 7]]]
    r = class_selectivity_details(maps, [[0]], boxes, [[0, 3, 3]])
    assert r.other.tolist() == [0.75] and r.selective.tolist() == [False]


def test_absent_class_area_and_ratio():
    maps = torch.zeros(2, 2, 4, 4)
    maps[0, 0, 0:2] = 1.0  # image 0, class 0 present: 8/16 = 0.5
    maps[0, 1, 0] = 1.0  # image 0, class 9 absent: 4/16 = 0.25
    maps[1, 0] = 0.25  # image 1, class 9 present: 0.25
    maps[1, 1, 0, 0] = 1.0  # image 1, class 0 absent: 1/16
    target = [[0, 9], [9, 0]]
    boxes = [[[0, 0, 3, 1]], [[0, 0, 3, 3]]]
    labels = [[0], [9]]
    r = absent_class_area_details(maps, target, boxes, labels)
    assert r.present.tolist() == [True, False, True, False]
    torch.testing.assert_close(r.areas, torch.tensor([0.5, 0.25, 0.25, 1 / 16]))
    s = absent_class_area(maps, target, boxes, labels)
    torch.testing.assert_close(s.absent, torch.tensor((0.25 + 1 / 16) / 2))
    torch.testing.assert_close(s.present, torch.tensor(0.375))
    torch.testing.assert_close(s.ratio, torch.tensor(0.15625 / 0.375))
    # no absent class: NaN, not an error
    assert math.isnan(absent_class_area(maps[:, :1], [[0], [9]], boxes, labels).absent.item())


def _scene_batch():
    torch.manual_seed(0)
    maps = torch.rand(4, 3, 8, 8)
    target = torch.tensor([[0, 1, 2], [0, 2, -1], [1, 2, 0], [2, 0, 1]])
    boxes = [
        torch.tensor([TOP_LEFT, BOTTOM_RIGHT]),
        torch.tensor([[0.0, 4.0, 3.0, 7.0]]),
        torch.tensor([TOP_LEFT, [4.0, 0.0, 7.0, 3.0], BOTTOM_RIGHT]),
        torch.tensor([[2.0, 2.0, 5.0, 5.0], TOP_LEFT]),
    ]
    labels = [torch.tensor([0, 1]), torch.tensor([2]), torch.tensor([1, 2, 0]), [2, 1]]
    return maps, target, boxes, labels


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
@pytest.mark.parametrize(
    "make",
    [
        lambda: SceneLocalisationEvaluator(threshold=0.6),
        lambda: PointingGame(tolerance=1),
        lambda: ClassSelectivity(),
        lambda: ClassSelectivity(compare="sum"),
        lambda: AbsentClassArea(),
    ],
)
def test_two_batches_accumulate_like_one(make):
    maps, target, boxes, labels = _scene_batch()
    whole, split = make(), make()
    assert isinstance(whole, Metric)
    whole.update(maps, target, boxes, labels)
    split.update(maps[:2], target[:2], boxes[:2], labels[:2])
    batch_value = split(maps[2:], target[2:], boxes[2:], labels[2:])  # forward: this batch
    one = make()
    one.update(maps[2:], target[2:], boxes[2:], labels[2:])
    torch.testing.assert_close(batch_value, one.compute(), equal_nan=True)
    torch.testing.assert_close(split.compute(), whole.compute(), equal_nan=True)
    assert split.num_pairs == whole.num_pairs
    assert split.labels.tolist() == whole.labels.tolist()
    split.reset()
    with pytest.raises(RuntimeError, match="update"):
        split.compute()


def test_metric_classes_match_the_functions():
    maps, target, boxes, labels = _scene_batch()
    m = SceneLocalisationEvaluator(threshold=0.6)
    m.update(maps, target, boxes, labels)
    torch.testing.assert_close(
        m.compute(), scene_localisation_error(maps, target, boxes, labels, threshold=0.6)
    )
    p = PointingGame(tolerance=1)
    r = p.update(maps, target, boxes, labels)
    assert p.hits.tolist() == r.hits.tolist()
    torch.testing.assert_close(p.compute(), pointing_game(maps, target, boxes, labels, 1))
    torch.testing.assert_close(p.class_accuracies, r.class_accuracies)
    c = ClassSelectivity()
    c.update(maps, target, boxes, labels)
    torch.testing.assert_close(c.compute(), class_selectivity(maps, target, boxes, labels))
    a = AbsentClassArea()
    a.update(maps, target, boxes, labels)
    expected = absent_class_area(maps, target, boxes, labels)
    for got, want in zip(a.compute(), expected):
        torch.testing.assert_close(got, want)


def test_bad_inputs_name_the_argument():
    maps = torch.zeros(1, 2, 8, 8)
    boxes, labels = [[TOP_LEFT, BOTTOM_RIGHT]], [[0, 1]]
    cases = [
        (lambda: pointing_game(torch.zeros(2, 8, 8), [[0]], boxes, labels), "attributions"),
        (lambda: pointing_game(maps, [[0]], boxes, labels), "target"),
        (lambda: pointing_game(maps, [[0.0, 1.0]], boxes, labels), "target"),
        (lambda: pointing_game(maps, [[1, 1]], boxes, labels), "target"),
        (lambda: pointing_game(maps, [[0, 1]], boxes, [[0]]), "gt_labels[0]"),
        (lambda: pointing_game(maps, [[0, 1]], boxes, [[0, -2]]), "gt_labels[0]"),
        (lambda: pointing_game(maps, [[0, 1]], boxes, "cat"), "gt_labels"),
        (lambda: pointing_game(maps, [[0, 1]], [[0, 0, 8, 3]], [[0]]), "gt_boxes"),
        (lambda: pointing_game(maps, [[0, 1]], boxes, labels, tolerance=-1), "tolerance"),
        (lambda: class_selectivity(maps, [[0, 1]], boxes, labels, "max"), "compare"),
        (lambda: scene_localisation_error(maps, [[0, 1]], boxes, labels, 0.5, 2), "iou_threshold"),
        (lambda: absent_class_area(maps, [[0, 1]], boxes, labels, "minmux"), "normalize"),
        (lambda: PointingGame(tolerance="15"), "tolerance"),
        (lambda: ClassSelectivity(compare="mass"), "compare"),
        (lambda: SceneLocalisationEvaluator(min_pixels=0), "min_pixels"),
    ]
    for call, argument in cases:
        with pytest.raises(InputError) as info:
            call()
        assert info.value.argument == argument


def test_non_finite_maps_are_refused():
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError) as info:
        pointing_game(maps, [[0]], [TOP_LEFT], [[0]])
    assert info.value.argument == "attributions"


def test_docstring_examples():
    assert doctest.testmod(scenes_module).failed == 0
