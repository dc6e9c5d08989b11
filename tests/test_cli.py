"""The command line: help texts, clear errors, and train / explain / evaluate end to end."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from PIL import Image

from captum_realtime_mask import RealTimeMaskAttribution
from captum_realtime_mask.cli import build_parser, main

pytestmark = pytest.mark.usefixtures("one_thread")

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

    from captum_realtime_mask.cli.classifier import fill_from_record

    record = {"model": "resnet18", "checkpoint": None, "pretrained": True, "num_classes": 1000}
    args = Namespace(model=None, checkpoint=None, pretrained=False, num_classes=None, mean=None,
                     std=None, image_size=None, blackbox=None, no_normalize=False)  # fmt: skip
    fill_from_record(args, record)
    assert args.model == "resnet18" and args.pretrained is True
    # Weights given on the command line win over the recorded pretrained flag.
    args = Namespace(model=None, checkpoint="w.pt", pretrained=False, num_classes=None, mean=None,
                     std=None, image_size=None, blackbox=None, no_normalize=False)  # fmt: skip
    fill_from_record(args, record)
    assert args.pretrained is False


def test_builtin_train_refuses_other_image_size(tmp_path, capsys):
    argv = ["train", "--builtin", "--image-size", "128", "--output", str(tmp_path / "m")]
    err = error_of(argv, capsys)
    assert "--image-size" in err and "64" in err


# ------------------------------------------------------------------ bad values and paths
@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["explain", "a.png", "--masker", "m", "--batch-size", "0"], "--batch-size"),
        (["explain", "a.png", "--masker", "m", "--batch-size", "-1"], "--batch-size"),
        (["explain", "a.png", "--masker", "m", "--image-size", "0"], "--image-size"),
        (["explain", "a.png", "--masker", "m", "--mean", "nan", "0", "0"], "--mean"),
        (["explain", "a.png", "--masker", "m", "--num-classes", "0"], "--num-classes"),
        (["train", "--builtin", "--num-workers", "-1"], "--num-workers"),
        (["train", "--builtin", "--checkpoint-every", "0"], "--checkpoint-every"),
        (["train", "--builtin", "--lr", "0"], "--lr"),
        (["evaluate", "--masker", "m", "--builtin", "--n", "0"], "--n"),
        (["evaluate", "--masker", "m", "--builtin", "--threshold", "2"], "--threshold"),
    ],
)
def test_bad_numbers_are_usage_errors(argv, option, capsys):
    # Before: 0 meant "the default" (--image-size, --n, --checkpoint-every), nan ran to NaN
    # masks, --batch-size 0 was a traceback and -1 explained nothing with exit code 0.
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


def test_unknown_device(workspace, capsys):
    image = str(workspace["images"] / "cat" / "cat0.png")
    argv = ["explain", image, "--masker", str(workspace["masker"]), *classifier_args(workspace)]
    err = error_of([*argv, "--device", "bogus"], capsys)
    assert "--device" in err and "bogus" in err


def test_outputs_that_are_files(workspace, tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    image = str(workspace["images"] / "cat" / "cat0.png")
    explain = ["explain", image, "--masker", str(workspace["masker"])]
    explain += [*classifier_args(workspace), "--image-size", str(SIZE)]
    err = error_of([*explain, "--output", str(afile)], capsys)
    assert "--output" in err and "is a file" in err
    err = error_of([*explain, "--output", str(afile / "sub")], capsys)
    assert "--output" in err
    # --cache-dir is checked for every command, even one that would not use it.
    err = error_of([*explain, "--output", str(tmp_path / "o"), "--cache-dir", str(afile)], capsys)
    assert "--cache-dir" in err
    for command in (["demo"], ["benchmark", "--mode", "quick"]):
        err = error_of([*command, "--output", str(afile)], capsys)
        assert "--output" in err
    evaluate = ["evaluate", "--masker", str(workspace["masker"]), *classifier_args(workspace)]
    evaluate += ["--image-folder", str(workspace["images"]), "--annotations", str(workspace["xml"])]
    evaluate += ["--image-size", str(SIZE), "--num-workers", "0"]
    err = error_of([*evaluate, "--json", str(tmp_path)], capsys)
    assert "--json" in err and "folder" in err
    err = error_of([*evaluate, "--json", str(afile / "m.json")], capsys)
    assert "--json" in err
    train = ["train", "--image-folder", str(workspace["images"]), *classifier_args(workspace)]
    train += ["--image-size", str(SIZE), "--max-steps", "1", "--num-workers", "0", "--no-progress"]
    err = error_of([*train, "--output", str(afile)], capsys)
    assert err.split("error: ")[1].startswith("--output")
    assert afile.read_text() == "keep me"


def test_train_checks_options_before_training(workspace, tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("fit() ran although an option was wrong")

    monkeypatch.setattr(RealTimeMaskAttribution, "fit", no_training)
    argv = ["train", "--image-folder", str(workspace["images"]), *classifier_args(workspace)]
    argv += ["--max-steps", "1", "--num-workers", "0", "--output", str(tmp_path / "m")]
    err = error_of([*argv, "--image-size", "30"], capsys)
    assert "--image-size" in err and "32" in err
    argv += ["--image-size", str(SIZE)]
    err = error_of([*argv, "--checkpoint-every", "1"], capsys)
    assert "--checkpoint-dir" in err
    err = error_of([*argv, "--n", "3"], capsys)
    assert "--n" in err and "--builtin" in err
    err = error_of([*argv, "--encoder", "torchvision:not_a_model"], capsys)
    assert "--encoder" in err and "not_a_model" in err


def test_explain_keeps_one_overlay_per_image(workspace, tmp_path, capsys):
    folder = tmp_path / "photos"
    source = workspace["images"] / "cat" / "cat0.png"
    for sub in ("a", "b"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "x.png").write_bytes(source.read_bytes())
    Image.open(source).convert("RGB").save(folder / "a" / "x.jpg")
    out = tmp_path / "overlays"
    argv = ["explain", str(folder), str(folder / "a" / "x.png"), "--masker"]
    argv += [str(workspace["masker"]), *classifier_args(workspace), "--image-size", str(SIZE)]
    assert main([*argv, "--output", str(out)]) == 0
    # Three images share the stem "x" (one of them named twice): three overlays, none lost.
    names = sorted(p.name for p in out.iterdir())
    assert names == ["x-2_overlay.png", "x-3_overlay.png", "x_overlay.png"]
    assert capsys.readouterr().out.count(" -> ") == 3


def test_unreadable_image_is_named(workspace, tmp_path, capsys):
    folder = tmp_path / "data"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for i in range(2):
            src = workspace["images"] / name / f"{name}{i}.png"
            (folder / name / src.name).write_bytes(src.read_bytes())
    (folder / "dog" / "zz.png").write_text("not an image")
    argv = ["explain", str(folder), "--masker", str(workspace["masker"])]
    argv += [*classifier_args(workspace), "--image-size", str(SIZE)]
    err = error_of([*argv, "--output", str(tmp_path / "o")], capsys)
    assert "zz.png" in err and "cat0.png" not in err
    # In training, from the DataLoader's main process and from a worker alike.
    train = ["train", "--image-folder", str(folder), *classifier_args(workspace)]
    train += ["--image-size", str(SIZE), "--max-steps", "1", "--batch-size", "8", "--no-progress"]
    for workers in ("0", "1"):
        out = str(tmp_path / f"m{workers}")
        err = error_of([*train, "--num-workers", workers, "--output", out], capsys)
        assert "zz.png" in err and "Traceback" not in err


def test_num_classes_from_the_masker(workspace, tmp_path):
    weights = ["--model", "test_resnet", "--checkpoint", str(workspace["ckpt"])]
    image = str(workspace["images"] / "cat" / "cat0.png")
    argv = ["explain", image, "--masker", str(workspace["masker"]), *weights]
    assert main([*argv, "--image-size", str(SIZE), "--output", str(tmp_path / "o")]) == 0
    argv = ["evaluate", "--masker", str(workspace["masker"]), *weights, "--image-size", str(SIZE)]
    argv += ["--image-folder", str(workspace["images"]), "--annotations", str(workspace["xml"])]
    assert main([*argv, "--num-workers", "0"]) == 0


def test_errors_name_the_option_and_stay_short(workspace, tmp_path, capsys):
    image = str(workspace["images"] / "cat" / "cat0.png")
    # Weights of another architecture: the key lists are cut, not printed whole.
    other = ["--model", "test_efficientnet", "--checkpoint", str(workspace["ckpt"])]
    argv = ["explain", image, "--masker", str(workspace["masker"]), *other, "--num-classes", "2"]
    err = error_of(argv, capsys)
    assert "does not fit" in err and len(err) < 1200
    # A folder that is no masker.
    argv = ["explain", image, "--masker", str(tmp_path), *classifier_args(workspace)]
    err = error_of(argv, capsys)
    assert err.split("error: ")[1].startswith("--masker")


def test_long_library_errors_are_cut(workspace, tmp_path, capsys):
    # Resuming with another preset: the library lists every key of two state dicts.
    argv = ["train", "--image-folder", str(workspace["images"]), *classifier_args(workspace)]
    argv += ["--image-size", str(SIZE), "--batch-size", "2", "--num-workers", "0"]
    argv += ["--no-progress", "--checkpoint-dir", str(tmp_path / "ckpt")]
    assert main([*argv, "--max-steps", "1", "--output", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    argv += ["--max-steps", "2", "--resume", "--preset", "paper", "--output", str(tmp_path / "m")]
    err = error_of(argv, capsys)
    assert "resume" in err and "Hint:" in err and "left out" in err
    assert len(err) < 1500


def test_builtin_train_refuses_other_num_classes(tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("data or black box loaded although --num-classes was wrong")

    monkeypatch.setattr("captum_realtime_mask.cli.data.builtin_split", no_loading)
    monkeypatch.setattr("captum_realtime_mask.benchmark.blackbox.train_blackbox", no_loading)
    argv = ["train", "--builtin", "--num-classes", "5", "--n", "16", "--max-steps", "1"]
    err = error_of([*argv, "--cache-dir", str(tmp_path), "--output", str(tmp_path / "m")], capsys)
    assert "--num-classes" in err and "10" in err


# ------------------------------------------------------------------ version, help, device
def test_version(capsys):
    from captum_realtime_mask import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.split() == ["captum-realtime-mask", __version__]


def test_every_option_has_help():
    import argparse

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"


@pytest.fixture
def no_work(monkeypatch):
    """Building a classifier, a black box or a masker fails the test: an error came too late."""

    def work(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(timm, "create_model", work)
    monkeypatch.setattr("captum_realtime_mask.benchmark.blackbox.train_blackbox", work)
    monkeypatch.setattr("captum_realtime_mask.benchmark.blackbox.load_blackbox", work)
    monkeypatch.setattr(RealTimeMaskAttribution, "load", work)
    monkeypatch.setattr(RealTimeMaskAttribution, "fit", work)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:7", "nonsense"])
@pytest.mark.parametrize("command", ["train", "explain", "evaluate"])
def test_device_is_checked_before_any_work(command, device, workspace, tmp_path, capsys, no_work):
    # Before: explain and evaluate ended in a traceback (exit 1) for a missing GPU, and train
    # loaded its data and classifier first, then said "device: ..." without the option.
    data = ["--image-folder", str(workspace["images"]), "--num-workers", "0"]
    masker = ["--masker", str(workspace["masker"])]
    argv = {
        "train": ["train", *data, "--output", str(tmp_path / "m")],
        "explain": ["explain", str(workspace["images"]), *masker, "--output", str(tmp_path / "o")],
        "evaluate": ["evaluate", *data, *masker, "--annotations", str(workspace["xml"])],
    }[command]
    err = error_of([*argv, *classifier_args(workspace), "--device", device], capsys)
    assert err.split("error: ")[1].startswith("--device: ") and repr(device) in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ normalisation
@pytest.fixture
def offline_pretrained(monkeypatch):
    """``--pretrained`` without a download: the timm model keeps its pretrained_cfg only."""
    create = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        torch.manual_seed(0)
        return create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    # test_resnet's weights were trained with mean = std = 0.5 at 160 px, not ImageNet's.
    config = timm.data.resolve_model_data_config(create("test_resnet", pretrained=False))
    assert config["mean"] == (0.5, 0.5, 0.5) and config["input_size"] == (3, 160, 160)


def test_pretrained_timm_model_uses_its_data_config(
    workspace, tmp_path, monkeypatch, offline_pretrained
):
    # Before: ImageNet's mean/std and 224 px, whatever the model's weights were trained with.
    seen = []

    def fit(self, loader, **kwargs):
        seen.append((self.forward_func, next(iter(loader))[0].shape[-2:]))
        return self

    monkeypatch.setattr(RealTimeMaskAttribution, "fit", fit)
    out = tmp_path / "masker"
    argv = ["train", "--image-folder", str(workspace["images"]), "--model", "test_resnet"]
    argv += ["--pretrained", "--num-workers", "0", "--no-progress", "--output", str(out)]
    assert main(argv) == 0
    (model, size), = seen  # fmt: skip
    assert model.normalize.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert model.normalize.std.flatten().tolist() == [0.5, 0.5, 0.5]
    assert tuple(size) == (160, 160)
    # The record says what was used, so explain normalises and resizes the same way.
    record = json.loads((out / "classifier.json").read_text())
    assert record["mean"] == [0.5, 0.5, 0.5] and record["std"] == [0.5, 0.5, 0.5]
    assert record["image_size"] == 160 and record["pretrained"] is True
    loaded = []
    load = RealTimeMaskAttribution.load.__func__

    def spy(cls, directory, forward_func, **kwargs):
        loaded.append(forward_func)
        return load(cls, directory, forward_func, **kwargs)

    monkeypatch.setattr(RealTimeMaskAttribution, "load", classmethod(spy))
    image = str(workspace["images"] / "cat" / "cat0.png")
    dest = tmp_path / "overlays"
    assert main(["explain", image, "--masker", str(out), "--output", str(dest)]) == 0
    assert loaded[0].normalize.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert (dest / "cat0_overlay.png").is_file()


def test_normalisation_and_size_defaults(workspace, offline_pretrained):
    from argparse import Namespace

    from captum_realtime_mask.cli.classifier import IMAGENET_MEAN, IMAGENET_STD, load_classifier
    from captum_realtime_mask.datasets import CLUTTERED_MEAN

    def load(**options):
        args = {"model": "test_resnet", "checkpoint": None, "pretrained": True, "num_classes": 2,
                "mean": None, "std": None, "no_normalize": False, "image_size": None,
                "builtin": False, "blackbox": None, "cache_dir": None}  # fmt: skip
        return load_classifier(Namespace(**{**args, **options}))

    half = (0.5, 0.5, 0.5)
    # --pretrained: the model's own data config; each of --mean, --std, --image-size wins.
    clf = load()
    assert (clf.mean, clf.std, clf.image_size) == (half, half, 160)
    assert clf.model.normalize.mean.flatten().tolist() == list(half)
    clf = load(mean=[0.1, 0.2, 0.3], image_size=32)
    assert (clf.mean, clf.std, clf.image_size) == ((0.1, 0.2, 0.3), half, 32)
    clf = load(no_normalize=True)
    assert clf.mean is None and not hasattr(clf.model, "normalize") and clf.image_size == 160
    # Own weights: ImageNet's statistics at 224 px, as before; --builtin: the dataset's.
    clf = load(pretrained=False, checkpoint=str(workspace["ckpt"]))
    assert (clf.mean, clf.std, clf.image_size) == (IMAGENET_MEAN, IMAGENET_STD, 224)
    clf = load(builtin=True)
    assert clf.mean == tuple(CLUTTERED_MEAN) and clf.image_size == 64


def test_module_entry_point_and_usage_doctests():
    import doctest
    import subprocess
    import sys

    from captum_realtime_mask import __version__
    from captum_realtime_mask.cli import usage

    assert doctest.testmod(usage).failed == 0
    cmd = [sys.executable, "-m", "captum_realtime_mask.cli", "--version"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and __version__ in result.stdout
