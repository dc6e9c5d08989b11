"""The command line: help texts, clear errors, and train / explain / evaluate end to end."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from PIL import Image

from captum_realtime_mask import RealTimeMaskAttribution
from captum_realtime_mask.cli import main

SUBCOMMANDS = ["demo", "benchmark", "train", "explain", "evaluate"]
SIZE = 32


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: captum-realtime-mask" in out
    if command is not None:
        assert command in out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny classifier checkpoint, a masker saved for it, and a small boxed ImageFolder."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2).eval()
    ckpt = root / "classifier.pt"
    torch.save(model.state_dict(), ckpt)
    attr = RealTimeMaskAttribution(model)
    x = torch.rand(4, 3, SIZE, SIZE)
    attr.fit([(x, torch.tensor([0, 1, 0, 1]))], max_steps=1, progress=False)
    attr.save(root / "masker")

    folder = root / "images"
    ann = root / "xml"
    ann.mkdir()
    g = torch.Generator().manual_seed(0)
    for k, name in enumerate(["cat", "dog"]):
        (folder / name).mkdir(parents=True)
        for i in range(2):
            pixels = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
            stem = f"{name}{i}"
            Image.fromarray(pixels).save(folder / name / f"{stem}.png")
            (ann / f"{stem}.xml").write_text(
                f"<annotation><filename>{stem}.png</filename><size><width>48</width>"
                f"<height>40</height></size><object><name>{name}</name><bndbox><xmin>{5 + k}"
                "</xmin><ymin>4</ymin><xmax>30</xmax><ymax>25</ymax></bndbox></object>"
                "</annotation>"
            )
    return {"root": root, "ckpt": ckpt, "masker": root / "masker", "images": folder, "xml": ann}


def classifier_args(ws):
    return ["--model", "test_resnet", "--checkpoint", str(ws["ckpt"]), "--num-classes", "2"]


def test_explain_end_to_end(workspace, tmp_path, capsys):
    files = [workspace["images"] / "cat" / "cat0.png", workspace["images"] / "dog" / "dog1.png"]
    out = tmp_path / "overlays"
    argv = ["explain", *map(str, files), "--masker", str(workspace["masker"])]
    argv += [*classifier_args(workspace), "--image-size", str(SIZE), "--output", str(out)]
    assert main(argv) == 0
    assert (out / "cat0_overlay.png").is_file()
    assert (out / "dog1_overlay.png").is_file()
    # A folder and a fixed target work too.
    argv[1:3] = [str(workspace["images"])]
    assert main([*argv, "--target", "1"]) == 0
    assert len(list(out.glob("*_overlay.png"))) == 4
    assert "mask area" in capsys.readouterr().out


def test_train_image_folder(workspace, tmp_path):
    out = tmp_path / "masker"
    argv = ["train", "--image-folder", str(workspace["images"]), *classifier_args(workspace)]
    argv += ["--image-size", str(SIZE), "--max-steps", "2", "--batch-size", "2"]
    argv += ["--num-workers", "0", "--no-progress", "--output", str(out)]
    assert main(argv) == 0
    assert (out / "masker.safetensors").is_file()
    record = json.loads((out / "classifier.json").read_text())
    assert record["model"] == "test_resnet" and record["num_classes"] == 2
    # explain then needs only the masker folder: the classifier comes from its record.
    dest = tmp_path / "overlays"
    image = workspace["images"] / "cat" / "cat1.png"
    assert main(["explain", str(image), "--masker", str(out), "--output", str(dest)]) == 0
    assert (dest / "cat1_overlay.png").is_file()


def test_evaluate_xml(workspace, tmp_path, capsys):
    result = tmp_path / "metrics.json"
    argv = ["evaluate", "--masker", str(workspace["masker"]), *classifier_args(workspace)]
    argv += ["--image-folder", str(workspace["images"]), "--annotations", str(workspace["xml"])]
    argv += ["--image-size", str(SIZE), "--num-workers", "0", "--json", str(result)]
    assert main(argv) == 0
    data = json.loads(result.read_text())
    assert data["num_images"] == 4
    assert set(data["methods"]) == {"realtime mask", "centre box"}
    for row in data["methods"].values():
        assert 0.0 <= row["localisation_error"] <= 1.0
    assert "loc. error" in capsys.readouterr().out


def error_of(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # earlier lines may be a progress bar
    assert last.startswith(f"captum-realtime-mask {argv[0]}: error: ")
    return last


def test_missing_files(workspace, tmp_path, capsys):
    missing = str(tmp_path / "nope")
    args = classifier_args(workspace)
    err = error_of(["explain", str(workspace["images"]), "--masker", missing, *args], capsys)
    assert "--masker" in err and "nope" in err
    err = error_of(["explain", missing, "--masker", str(workspace["masker"]), *args], capsys)
    assert "no such file" in err
    bad = ["--model", "test_resnet", "--checkpoint", missing, "--num-classes", "2"]
    err = error_of(["train", "--image-folder", str(workspace["images"]), *bad], capsys)
    assert "--checkpoint" in err
    err = error_of(["train", "--image-folder", missing, *args], capsys)
    assert "--image-folder" in err
    err = error_of(["evaluate", "--masker", str(workspace["masker"]), *args, "--image-folder",
                    str(workspace["images"]), "--annotations", missing], capsys)  # fmt: skip
    assert "--annotations" in err


def test_wrong_shapes_and_files(workspace, tmp_path, capsys):
    # Weights for another number of classes.
    argv = ["explain", str(workspace["images"]), "--masker", str(workspace["masker"])]
    wrong = ["--model", "test_resnet", "--checkpoint", str(workspace["ckpt"]), "--num-classes"]
    err = error_of([*argv, *wrong, "5"], capsys)
    assert "does not fit" in err
    # An image size the encoder's stride does not divide.
    err = error_of([*argv, *classifier_args(workspace), "--image-size", "30"], capsys)
    assert "divisible" in err
    # A corrupt masker folder.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    argv[3] = str(broken)
    err = error_of([*argv, *classifier_args(workspace), "--image-size", str(SIZE)], capsys)
    assert "broken" in err
    # A class out of range.
    argv[3] = str(workspace["masker"])
    argv += [*classifier_args(workspace), "--image-size", str(SIZE), "--target", "7"]
    err = error_of(argv, capsys)
    assert "--target" in err


def test_record_restores_pretrained_classifier():
    from argparse import Namespace

    from captum_realtime_mask.cli import _fill_from_record

    record = {"model": "resnet18", "checkpoint": None, "pretrained": True, "num_classes": 1000}
    args = Namespace(model=None, checkpoint=None, pretrained=False, num_classes=None, mean=None,
                     std=None, image_size=None, blackbox=None, no_normalize=False)  # fmt: skip
    _fill_from_record(args, record)
    assert args.model == "resnet18" and args.pretrained is True
    # Weights given on the command line win over the recorded pretrained flag.
    args = Namespace(model=None, checkpoint="w.pt", pretrained=False, num_classes=None, mean=None,
                     std=None, image_size=None, blackbox=None, no_normalize=False)  # fmt: skip
    _fill_from_record(args, record)
    assert args.pretrained is False


def test_builtin_train_refuses_other_image_size(tmp_path, capsys):
    argv = ["train", "--builtin", "--image-size", "128", "--output", str(tmp_path / "m")]
    err = error_of(argv, capsys)
    assert "--image-size" in err and "64" in err
