import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics import (
    BoxAnnotation,
    localisation_details,
    localisation_error,
    parse_voc_xml,
    resize_pixel_boxes,
    saliency_metric,
)


def voc_xml(objects, width=500, height=375, filename="2007_000032.jpg"):
    parts = [f"<annotation><folder>VOC2007</folder><filename>{filename}</filename>"]
    parts.append(f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>")
    for name, box, difficult in objects:
        xmin, ymin, xmax, ymax = box
        parts.append(
            f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "".join(parts)


def write(tmp_path, text, name="a.xml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_voc_file_original_coordinates(tmp_path):
    path = write(
        tmp_path,
        voc_xml([("aeroplane", (104, 78, 375, 183), 0), ("person", (1, 1, 500, 375), 1)]),
    )
    ann = parse_voc_xml(path)
    assert isinstance(ann, BoxAnnotation)
    assert ann.filename == "2007_000032.jpg"
    assert ann.original_size == (375, 500) and ann.size == (375, 500)
    assert ann.names == ("aeroplane", "person")
    assert ann.difficult == (False, True)
    # 1-based inclusive to 0-based inclusive
    assert ann.boxes.tolist() == [[103.0, 77.0, 374.0, 182.0], [0.0, 0.0, 499.0, 374.0]]
    assert ann.boxes.dtype == torch.float32
    # str paths work as well as Path objects
    assert parse_voc_xml(str(path)).boxes.tolist() == ann.boxes.tolist()


def test_parse_maps_to_resized_input(tmp_path):
    # 200 wide, 100 high, resized to 20 x 10 (height 10, width 20): scale 0.1 on both axes
    path = write(tmp_path, voc_xml([("cat", (11, 21, 50, 60), 0)], width=200, height=100))
    ann = parse_voc_xml(path, size=(10, 20))
    assert ann.size == (10, 20) and ann.original_size == (100, 200)
    # pixel edges [10, 50) x [20, 60) -> [1, 5) x [2, 6): inclusive (1, 2, 4, 5)
    assert ann.boxes.tolist() == [[1.0, 2.0, 4.0, 5.0]]
    # aspect ratio ignored: square 10 x 10 scales x by 0.05 and y by 0.1
    # x edges [10, 50) * 0.05 = [0.5, 2.5): halves round up, to [1, 3)
    assert parse_voc_xml(path, size=10).boxes.tolist() == [[1.0, 2.0, 2.0, 5.0]]


def test_parse_whole_image_box_maps_to_whole_input(tmp_path):
    path = write(tmp_path, voc_xml([("dog", (1, 1, 333, 500), 0)], width=333, height=500))
    assert parse_voc_xml(path, size=224).boxes.tolist() == [[0.0, 0.0, 223.0, 223.0]]


def test_zero_based_float_coordinates_and_clamping(tmp_path):
    text = voc_xml([("n01440764", ("0.0", "5.0", "99.0", "120"), 0)], width=100, height=100)
    path = write(tmp_path, text)
    ann = parse_voc_xml(path, one_based=False)
    assert ann.boxes.tolist() == [[0.0, 5.0, 99.0, 99.0]]  # ymax past the image is clamped


def test_difficult_objects_can_be_dropped(tmp_path):
    objects = [("a", (1, 1, 10, 10), 1), ("b", (5, 5, 20, 20), 0)]
    ann = parse_voc_xml(write(tmp_path, voc_xml(objects)), include_difficult=False)
    assert ann.names == ("b",) and ann.boxes.tolist() == [[4.0, 4.0, 19.0, 19.0]]


def test_file_object_and_no_objects():
    xml = "<annotation><size><width>10</width><height>20</height></size></annotation>"
    ann = parse_voc_xml(io.BytesIO(xml.encode()))
    assert ann.filename == "" and ann.names == ()
    assert ann.boxes.shape == (0, 4)


def test_parsed_boxes_feed_the_metrics(tmp_path):
    paths = [
        write(tmp_path, voc_xml([("a", (1, 1, 40, 40), 0)], width=80, height=80), "0.xml"),
        write(
            tmp_path,
            voc_xml([("b", (41, 41, 80, 80), 0), ("c", (1, 1, 8, 8), 0)], width=80, height=80),
            "1.xml",
        ),
    ]
    gt = [parse_voc_xml(p, size=8).boxes for p in paths]
    assert gt[1].tolist() == [[4.0, 4.0, 7.0, 7.0], [0.0, 0.0, 0.0, 0.0]]
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 0:4, 0:4] = 1.0
    assert localisation_details(mask, gt).hits.tolist() == [True, False]
    scores = saliency_metric(
        lambda x: torch.zeros(x.shape[0], 3), torch.rand(2, 3, 8, 8), None, 0, boxes=gt
    )
    assert torch.isfinite(scores).all() and scores.shape == (2,)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("<annotation><size><width>10</width></size></annotation>", "size/height"),
        ("<annotation><size><width>10</width><height>x</height></size></annotation>", "number"),
        ("<annotation><size><width>0</width><height>5</height></size></annotation>", "positive"),
        ("<annotation><size><width>10</width>", "well-formed"),
        (voc_xml([("a", (1, 1, 5, 5), 0)]).replace("<name>a</name>", ""), "name"),
        (voc_xml([("a", (1, 1, 5, 5), 0)]).replace("<xmax>5</xmax>", ""), "bndbox/xmax"),
        (voc_xml([("a", (600, 1, 700, 5), 0)]), "outside the image"),
        (voc_xml([("a", (9, 1, 5, 5), 0)]), "reversed"),
    ],
)
def test_bad_files_raise_input_error_naming_the_field(tmp_path, text, match):
    with pytest.raises(InputError, match=match):
        parse_voc_xml(write(tmp_path, text))


def test_bad_source_and_size(tmp_path):
    with pytest.raises(InputError, match="source"):
        parse_voc_xml(42)
    path = write(tmp_path, voc_xml([("a", (1, 1, 5, 5), 0)]))
    with pytest.raises(InputError, match="size"):
        parse_voc_xml(path, size=(0, 10))


def test_size_error_shows_the_value_given():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    with pytest.raises(InputError, match=r"^from_size: .*got int 0\."):
        resize_pixel_boxes(boxes, 0, 20)
    with pytest.raises(InputError, match=r"^to_size: .*\(0, 20\)"):
        resize_pixel_boxes(boxes, 10, (0, 20))
    with pytest.raises(InputError, match=r"^from_size: .*'24'"):
        resize_pixel_boxes(boxes, "24", 20)


def test_box_annotation_instead_of_boxes_hints_at_dot_boxes(tmp_path):
    ann = parse_voc_xml(write(tmp_path, voc_xml([("a", (1, 1, 4, 4), 0)], width=8, height=8)))
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, :4, :4] = 1.0
    with pytest.raises(InputError, match=r"^gt_boxes\[0\]: .*`\.boxes`"):
        localisation_error(mask, [ann])
    assert float(localisation_error(mask, [ann.boxes])) == 0.0


def test_resize_pixel_boxes_identity_and_upscale():
    boxes = torch.tensor([[2.0, 3.0, 5.0, 7.0]])
    assert resize_pixel_boxes(boxes, (10, 10), (10, 10)).tolist() == boxes.tolist()
    # x2 doubles: edges [2, 6) x [3, 8) -> [4, 12) x [6, 16)
    assert resize_pixel_boxes(boxes, 10, 20).tolist() == [[4.0, 6.0, 11.0, 15.0]]
    # a one-pixel box shrunk far keeps one pixel
    tiny = resize_pixel_boxes(torch.tensor([[50.0, 50.0, 50.0, 50.0]]), 100, 4)
    assert tiny.tolist() == [[2.0, 2.0, 2.0, 2.0]]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 400),
    st.integers(1, 400),
    st.integers(1, 300),
    st.integers(1, 300),
    st.data(),
)
def test_resized_boxes_stay_valid_and_in_frame(from_h, from_w, to_h, to_w, data):
    x1 = data.draw(st.integers(0, from_w - 1))
    x2 = data.draw(st.integers(x1, from_w - 1))
    y1 = data.draw(st.integers(0, from_h - 1))
    y2 = data.draw(st.integers(y1, from_h - 1))
    out = resize_pixel_boxes(torch.tensor([[x1, y1, x2, y2]]), (from_h, from_w), (to_h, to_w))
    a1, b1, a2, b2 = out[0].tolist()
    assert 0 <= a1 <= a2 <= to_w - 1 and 0 <= b1 <= b2 <= to_h - 1
    assert all(v == int(v) for v in (a1, b1, a2, b2))
    # the box's relative extent is kept to within about a pixel of the target frame
    # (a box kept at one pixel may end up to 1.5 pixels from its scaled edge)
    assert abs(a1 - x1 * to_w / from_w) <= 1 and abs((a2 + 1) - (x2 + 1) * to_w / from_w) <= 1.5
    assert abs(b1 - y1 * to_h / from_h) <= 1 and abs((b2 + 1) - (y2 + 1) * to_h / from_h) <= 1.5
    if (x1, y1, x2 + 1, y2 + 1) == (0, 0, from_w, from_h):
        assert (a1, b1, a2, b2) == (0, 0, to_w - 1, to_h - 1)
