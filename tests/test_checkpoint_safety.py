"""Saving never deletes what the package did not write; load() checks its arguments first."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import make_test_resnet
from torch import nn

from captum_realtime_mask import RealTimeMaskAttribution
from captum_realtime_mask.checkpoint import format as checkpoint_mod
from captum_realtime_mask.checkpoint import read_checkpoint, write_checkpoint
from captum_realtime_mask.errors import CheckpointError, InputError

SIZE = 32


classifier = make_test_resnet


@pytest.fixture(scope="module")
def model():
    return classifier()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, SIZE, SIZE, generator=g), torch.tensor([3, 7])


@pytest.fixture(scope="module")
def attr(model):
    return RealTimeMaskAttribution(model, seed=1)


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def assert_loads_like(folder, attr, model, images) -> None:
    x, y = images
    again = RealTimeMaskAttribution.load(folder, model)
    assert torch.equal(again.mask(x, target=y), attr.mask(x, target=y))


# ------------------------------------------------------------------------ what save() may touch
def test_a_folder_with_other_files_is_refused_and_left_untouched(attr, tmp_path, monkeypatch):
    work = tmp_path / "project"
    (work / "sub").mkdir(parents=True)
    (work / "data.csv").write_text("1,2")
    (work / "sub" / "x.bin").write_bytes(b"x")
    monkeypatch.chdir(work)
    for target in (work, ".", os.getcwd(), Path("sub") / ".."):
        with pytest.raises(InputError, match=r"directory: .*data\.csv.*new or empty folder"):
            attr.save(target)
    assert os.getcwd() == str(work)
    assert listing(work) == ["data.csv", "sub"] and (work / "data.csv").read_text() == "1,2"
    assert listing(work / "sub") == ["x.bin"]
    assert listing(tmp_path) == ["project"]  # no temporary or parked folder beside it


def test_a_file_is_not_replaced_by_a_folder(attr, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("hello")
    with pytest.raises(InputError, match="directory: .*is a file"):
        attr.save(target)
    assert target.read_text() == "hello"
    assert listing(tmp_path) == ["notes.txt"]


def test_another_tools_config_json_is_not_taken_for_a_checkpoint(attr, tmp_path):
    hf = tmp_path / "bert"  # a Hugging Face model folder also has config.json + *.safetensors
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "bert", "files": {}}))
    (hf / "masker.safetensors").write_bytes(b"not ours")
    with pytest.raises(InputError, match="directory"):
        attr.save(hf)
    assert (hf / "masker.safetensors").read_bytes() == b"not ours"
    assert json.loads((hf / "config.json").read_text()) == {"model_type": "bert", "files": {}}


def test_a_user_folder_named_like_a_parked_version_is_not_removed(attr, tmp_path):
    parked = tmp_path / ".masker.old"
    parked.mkdir()
    (parked / "mine.txt").write_text("mine")
    with pytest.raises(InputError, match=r"directory: .*\.masker\.old"):
        attr.save(tmp_path / "masker")
    assert listing(tmp_path) == [".masker.old"] and listing(parked) == ["mine.txt"]


def test_save_into_the_current_empty_folder_keeps_the_folder(
    attr, model, images, tmp_path, monkeypatch
):
    work = tmp_path / "work"
    work.mkdir()
    inode = work.stat().st_ino
    monkeypatch.chdir(work)
    attr.save(".")
    assert listing(work) == ["config.json", "masker.safetensors"]
    assert work.stat().st_ino == inode  # written in place, not swapped
    assert listing(tmp_path) == ["work"]
    assert_loads_like(".", attr, model, images)
    # Saving again replaces the checkpoint; the process stays in a working folder.
    attr.save(".")
    assert os.getcwd() == str(work) and Path(".").resolve() == work
    assert listing(".") == ["config.json", "masker.safetensors"]
    assert listing(tmp_path) == ["work"]
    monkeypatch.chdir(tmp_path / "work" / "..")
    assert_loads_like("work", attr, model, images)


def test_save_dotdot_resolves_to_the_parent(attr, tmp_path, monkeypatch):
    parent = tmp_path / "parent"
    (parent / "child").mkdir(parents=True)
    monkeypatch.chdir(parent / "child")
    with pytest.raises(InputError, match="child"):  # the parent holds 'child': not empty
        attr.save("..")
    monkeypatch.chdir(tmp_path)
    (parent / "child").rmdir()
    attr.save(Path("parent") / "new" / "..")  # 'new' need not exist
    assert listing(parent) == ["config.json", "masker.safetensors"]


def test_user_files_in_a_checkpoint_folder_are_kept(attr, model, images, tmp_path):
    folder = tmp_path / "masker"
    attr.save(folder)
    (folder / "README.md").write_text("my notes")
    (folder / "plots").mkdir()
    (folder / "plots" / "a.png").write_bytes(b"png")
    os.symlink("README.md", folder / "notes-link")
    attr.save(folder)
    assert listing(folder) == [
        "README.md",
        "config.json",
        "masker.safetensors",
        "notes-link",
        "plots",
    ]
    assert (folder / "README.md").read_text() == "my notes"
    assert (folder / "plots" / "a.png").read_bytes() == b"png"
    assert os.readlink(folder / "notes-link") == "README.md"
    assert listing(tmp_path) == ["masker"]
    assert_loads_like(folder, attr, model, images)


def test_only_the_package_files_are_replaced(tmp_path):
    folder = tmp_path / "step-000000001"
    write_checkpoint(folder, {"kind": "x"}, {"masker": {"w": torch.zeros(2)}, "training": {}})
    (folder / "extra.safetensors").write_bytes(b"user weights, not listed in config.json")
    write_checkpoint(folder, {"kind": "y"}, {"masker": {"w": torch.ones(2)}})
    # training.safetensors was the package's (listed in the old config.json): dropped.
    assert listing(folder) == ["config.json", "extra.safetensors", "masker.safetensors"]
    meta, tensors = read_checkpoint(folder)
    assert meta["kind"] == "y" and torch.equal(tensors["masker"]["w"], torch.ones(2))


def test_a_symlink_is_written_through_and_stays_a_link(attr, model, images, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    os.symlink(real, link)
    attr.save(link)
    assert link.is_symlink() and listing(real) == ["config.json", "masker.safetensors"]
    (real / "README.md").write_text("kept")
    attr.save(link)  # now replacing a checkpoint, still through the link
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert listing(real) == ["README.md", "config.json", "masker.safetensors"]
    assert listing(tmp_path) == ["link", "real"]
    assert_loads_like(link, attr, model, images)


def test_a_failed_save_leaves_no_temporary_folder_and_the_old_version(
    attr, model, images, tmp_path, monkeypatch
):
    folder = tmp_path / "masker"
    attr.save(folder)
    (folder / "README.md").write_text("keep")
    other = RealTimeMaskAttribution(model, seed=2)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(checkpoint_mod, "save_file", crash)
    for target in (folder, tmp_path / "new", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(KeyboardInterrupt):
            other.save(target)
    monkeypatch.undo()
    assert listing(tmp_path) == ["empty", "masker"]
    assert listing(tmp_path / "empty") == []
    assert listing(folder) == ["README.md", "config.json", "masker.safetensors"]
    assert_loads_like(folder, attr, model, images)


def test_a_crash_between_the_renames_keeps_the_previous_version_and_user_files(
    attr, model, images, tmp_path, monkeypatch
):
    folder = tmp_path / "masker"
    attr.save(folder)
    (folder / "README.md").write_text("keep")
    real_replace = os.replace

    def crash_on_swap_in(src, dst):
        if Path(dst) == folder and Path(src).name.startswith(".masker."):
            raise KeyboardInterrupt("killed between the renames")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_mod.os, "replace", crash_on_swap_in)
    with pytest.raises(KeyboardInterrupt):
        RealTimeMaskAttribution(model, seed=2).save(folder)
    monkeypatch.undo()
    assert listing(tmp_path) == [".masker.old"]
    assert_loads_like(folder, attr, model, images)  # read from the parked version
    attr.save(folder)  # the next save takes the user's files from the parked version
    assert listing(tmp_path) == ["masker"]
    assert (folder / "README.md").read_text() == "keep"


@pytest.mark.parametrize("bad", [None, 3, b"bytes/path", ""])
def test_save_rejects_what_is_not_a_path(attr, bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="directory: expected a folder path"):
        attr.save(bad)
    assert listing(tmp_path) == []


# ------------------------------------------------------------------------------------- load()
def test_load_refuses_a_classifier_with_another_number_of_classes(attr, tmp_path):
    attr.save(tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"forward_func: .*10 classes.*has 5"):
        RealTimeMaskAttribution.load(tmp_path / "m", classifier(num_classes=5))


def test_an_explicit_num_classes_still_loads(tmp_path, images):
    # num_classes is misread (10, the timm model's) from this wrapper, so it was passed.
    wrapped = nn.Sequential(classifier(10), nn.Linear(10, 4)).eval()
    attr = RealTimeMaskAttribution(wrapped, num_classes=4, encoder="small_cnn")
    attr.save(tmp_path / "m")
    again = RealTimeMaskAttribution.load(tmp_path / "m", wrapped)
    assert again.num_classes == 4
    x, _ = images
    assert torch.equal(again.mask(x, target=3), attr.mask(x, target=3))


def test_load_takes_the_newest_step_of_a_checkpoint_dir(model, images, tmp_path):
    x, y = images
    trained = RealTimeMaskAttribution(model)
    trained.fit(
        [(x, y)],
        epochs=2,
        progress=False,
        checkpoint_dir=str(tmp_path / "run"),
        checkpoint_every=1,
    )
    assert listing(tmp_path / "run") == ["step-000000001", "step-000000002"]
    from_root = RealTimeMaskAttribution.load(tmp_path / "run", model)
    assert torch.equal(from_root.mask(x, target=y), trained.mask(x, target=y))
    older = RealTimeMaskAttribution.load(tmp_path / "run" / "step-000000001", model)
    assert not torch.equal(older.mask(x, target=y), trained.mask(x, target=y))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json.*step-\*"):
        RealTimeMaskAttribution.load(tmp_path / "empty", model)


@pytest.mark.parametrize(
    "device, expected",
    [
        ("meta", "device: .*'meta'"),
        ("bogus", "device: .*'bogus'"),
        (None, "device: .*None"),
        ("cuda:7", "device: 'cuda:7' is not available"),
    ],
)
def test_load_checks_the_device_before_reading(attr, model, tmp_path, device, expected):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    attr.save(tmp_path / "m")
    with pytest.raises(InputError, match=expected):
        RealTimeMaskAttribution.load(tmp_path / "m", model, device=device)
    with pytest.raises(InputError, match="device"):  # before looking for the files
        RealTimeMaskAttribution.load(tmp_path / "missing", model, device=device)


def test_load_names_swapped_or_wrong_arguments(attr, model, tmp_path):
    attr.save(tmp_path / "m")
    with pytest.raises(InputError, match=r"directory: .*ResNet.*swapped"):
        RealTimeMaskAttribution.load(model, tmp_path / "m")
    with pytest.raises(InputError, match=r"directory: .*swapped"):
        RealTimeMaskAttribution.load(model, str(tmp_path / "m"))
    with pytest.raises(InputError, match="directory: .*NoneType"):
        RealTimeMaskAttribution.load(None, model)
    with pytest.raises(InputError, match="forward_func: .*str"):
        RealTimeMaskAttribution.load(tmp_path / "m", "resnet")
    with pytest.raises(InputError, match="encoder: .*str"):
        RealTimeMaskAttribution.load(tmp_path / "m", model, encoder="resnet18")
