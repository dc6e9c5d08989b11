"""Checkpoints on disk: what save() may touch, interrupted writes, what load() and resume refuse,
the step folders of a fit's checkpoint_dir, and resuming a fit from them."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    FIT,
    QUIET,
    Interrupted,
    assert_same_masker,
    changed_tensors,
    hidden,
    interrupt_at_step,
    make_attr,
    make_batches,
    make_test_resnet,
    masker_tensors,
    resnet_batch,
    tiny_classifier,
    visible,
)
from torch.utils.data import DataLoader, TensorDataset

from captum_realtime_mask import CheckpointError, InputError, RealTimeMaskAttribution
from captum_realtime_mask.checkpoint import format as checkpoint_format
from captum_realtime_mask.checkpoint import read_checkpoint, write_checkpoint
from captum_realtime_mask.training import state as training_state
from captum_realtime_mask.training import trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return make_test_resnet()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 32, 32, generator=g), torch.tensor([3, 7])


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


@pytest.mark.parametrize("bad", [None, 3, b"bytes/path", ""])
def test_save_rejects_what_is_not_a_path(attr, bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="directory: expected a folder path"):
        attr.save(bad)
    assert listing(tmp_path) == []


# ---------------------------------------------------------------------------- interrupted writes
def crash_between_renames(monkeypatch, folder: Path, error: type[BaseException]) -> None:
    """Make the rename that swaps a new version in at ``folder`` raise ``error``. Replacing a
    folder takes two renames: by then the previous version is parked beside it."""
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == folder and Path(src).name.startswith(f".{folder.name}."):
            raise error("killed between the renames")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_format.os, "replace", replace)


def saved_with_a_readme(attr, tmp_path: Path) -> Path:
    """``attr`` saved to ``tmp_path / "masker"``, beside a README of the user's."""
    folder = tmp_path / "masker"
    attr.save(folder)
    (folder / "README.md").write_text("keep")
    return folder


def test_a_failed_save_leaves_no_temporary_folder_and_the_old_version(
    attr, model, images, tmp_path, monkeypatch
):
    folder = saved_with_a_readme(attr, tmp_path)
    other = RealTimeMaskAttribution(model, seed=2)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(checkpoint_format, "save_file", crash)
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
    folder = saved_with_a_readme(attr, tmp_path)
    crash_between_renames(monkeypatch, folder, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        RealTimeMaskAttribution(model, seed=2).save(folder)
    monkeypatch.undo()
    assert listing(tmp_path) == [".masker.old"]
    assert_loads_like(folder, attr, model, images)  # read from the parked version
    attr.save(folder)  # the next save takes the user's files from the parked version
    assert listing(tmp_path) == ["masker"]
    assert (folder / "README.md").read_text() == "keep"


def test_a_save_interrupted_between_its_renames_loses_nothing(tmp_path, monkeypatch):
    """A training checkpoint: resuming puts the parked version back."""
    data = make_batches(3)
    ckpt = tmp_path / "ckpt"
    attr = make_attr()
    with monkeypatch.context() as m:
        m.setattr(trainer, "step_terms", interrupt_at_step(4))  # crash in the 2nd epoch
        with pytest.raises(Interrupted):
            attr.fit(data, epochs=2, checkpoint_dir=str(ckpt), checkpoint_every=1, **FIT)
    step3 = ckpt / "step-000000003"  # written at step 3, then again at the end of epoch 0

    crash_between_renames(monkeypatch, step3, Interrupted)
    with pytest.raises(Interrupted):
        write_checkpoint(step3, {"kind": "x"}, {"masker": {"w": torch.zeros(1)}})
    monkeypatch.undo()
    assert not step3.exists() and hidden(ckpt) == [".step-000000003.old"]
    meta, _ = read_checkpoint(step3)  # reads the parked previous version
    assert meta["training"]["state"]["step"] == 3

    # Resuming finds it, puts it back, and finishes exactly like an uninterrupted run.
    resumed = make_attr()
    resumed.fit(
        data, epochs=2, resume_from=ckpt, checkpoint_dir=str(ckpt), checkpoint_every=1, **FIT
    )
    reference = make_attr()
    reference.fit(data, epochs=2, **FIT)
    assert_same_masker(reference, resumed)
    assert hidden(ckpt) == [] and visible(ckpt)[-1] == "step-000000006"


def test_a_prune_killed_mid_deletion_leaves_no_half_deleted_checkpoint(tmp_path, monkeypatch):
    real_rmtree = shutil.rmtree

    def killed_after_one_file(path, ignore_errors=False):
        path = Path(path)
        if not path.exists():
            return
        next(f for f in sorted(path.iterdir()) if f.is_file()).unlink()
        raise Interrupted(f"killed while deleting {path.name}")

    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as m:
        m.setattr(shutil, "rmtree", killed_after_one_file)
        with pytest.raises(Interrupted):
            make_attr().fit(
                make_batches(3),
                epochs=1,
                checkpoint_dir=str(ckpt),
                keep_last=1,
                checkpoint_every=1,
                **FIT,
            )
    assert shutil.rmtree is real_rmtree
    assert visible(ckpt) == ["step-000000002"] and hidden(ckpt) == [".step-000000001.trash"]
    read_checkpoint(ckpt / "step-000000002")
    make_attr().fit(
        make_batches(3), epochs=1, resume_from=ckpt, checkpoint_dir=str(ckpt), keep_last=1, **FIT
    )
    assert visible(ckpt) == ["step-000000003"] and hidden(ckpt) == []


# ----------------------------------------------------------------- what load() and resume refuse


@pytest.fixture(scope="module")
def pristine_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    make_attr().fit(make_batches(2), epochs=1, checkpoint_dir=str(root), **FIT)
    return root / "step-000000002"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_config(path: Path, edit) -> None:
    cfg = path / "config.json"
    meta = json.loads(cfg.read_text())
    edit(meta)
    cfg.write_text(json.dumps(meta))


CORRUPTIONS = {
    "truncated_training": (lambda d: _truncate(d / "training.safetensors"), "truncated"),
    "truncated_masker": (lambda d: _truncate(d / "masker.safetensors"), "truncated"),
    "flipped_masker_byte": (lambda d: _flip_byte(d / "masker.safetensors"), "modified"),
    "missing_masker": (lambda d: (d / "masker.safetensors").unlink(), "missing"),
    "truncated_config": (lambda d: _truncate(d / "config.json"), "not valid JSON"),
    "edited_step": (
        lambda d: _edit_config(d, lambda m: m["training"]["state"].update(step=1)),
        "modified after saving",
    ),
    "edited_files": (
        lambda d: _edit_config(d, lambda m: m.update(files={"../x.safetensors": "0"})),
        "modified after saving",
    ),
    "format_version_2": (
        lambda d: _edit_config(d, lambda m: m.update(format_version=2)),
        "format_version 2 is not supported",
    ),
    "json_list": (lambda d: (d / "config.json").write_text("[1, 2]"), "JSON object"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_checkpoints_fail_to_load_and_to_resume(pristine_checkpoint, tmp_path, corruption):
    corrupt, expected = CORRUPTIONS[corruption]
    folder = tmp_path / "step-000000002"
    shutil.copytree(pristine_checkpoint, folder)
    corrupt(folder)
    with pytest.raises(CheckpointError, match=expected):
        RealTimeMaskAttribution.load(folder, tiny_classifier())
    attr = make_attr()
    before = masker_tensors(attr)
    with pytest.raises(CheckpointError, match=expected):
        attr.fit(make_batches(2), epochs=2, resume_from=tmp_path, **FIT)
    assert changed_tensors(before, masker_tensors(attr)) == []


def test_load_rejects_a_config_this_release_cannot_read(tmp_path):
    make_attr().save(tmp_path / "m")
    meta, tensors = read_checkpoint(tmp_path / "m")
    meta["masker"]["option_from_the_future"] = 1
    for key in ("files", "config_sha256", "format_version"):
        del meta[key]
    write_checkpoint(tmp_path / "future", meta, tensors)  # valid hashes, unknown field
    with pytest.raises(CheckpointError, match="config cannot be read.*option_from_the_future"):
        RealTimeMaskAttribution.load(tmp_path / "future", tiny_classifier())


def test_loading_and_resuming_never_unpickle(pristine_checkpoint, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle-based loading was called")

    class NoUnpickler:
        def __init__(self, *args, **kwargs):
            forbidden()

    for owner, name in [
        (torch, "load"),
        (torch.serialization, "load"),
        (pickle, "load"),
        (pickle, "loads"),
    ]:
        monkeypatch.setattr(owner, name, forbidden)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    loaded = RealTimeMaskAttribution.load(pristine_checkpoint, tiny_classifier())
    assert loaded.num_classes == 3
    with pytest.warns(UserWarning, match="epochs=1 -> 2"):  # extends the run by an epoch
        make_attr().fit(make_batches(2), epochs=2, resume_from=pristine_checkpoint, **FIT)


def test_resume_from_something_that_is_not_a_matching_training_checkpoint(
    pristine_checkpoint, tmp_path
):
    saved = tmp_path / "saved"
    make_attr().save(saved)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        make_attr().fit(make_batches(1), resume_from=saved, **FIT)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        make_attr().fit(make_batches(1), resume_from=tmp_path / "empty", **FIT)
    four_classes = make_attr(num_classes=4)
    with pytest.raises(CheckpointError, match="does not fit this masker"):
        four_classes.fit(make_batches(1), resume_from=pristine_checkpoint, **FIT)


# ------------------------------------------------------------------ the checkpoint_dir of a fit


def test_a_checkpoint_dir_that_is_a_file_is_refused_before_training(tmp_path):
    x, y = resnet_batch()
    attr = RealTimeMaskAttribution(make_test_resnet(5))
    masker_before = masker_tensors(attr)
    blocker = tmp_path / "ckpt"
    blocker.write_text("not a folder")
    for path in (blocker, blocker / "sub"):
        with pytest.raises(InputError, match="checkpoint_dir: .*file"):
            attr.fit([(x, y)], epochs=1, checkpoint_dir=str(path), **QUIET)
    expected = r"checkpoint_dir: expected a path \(a str or os.PathLike\) or None, got int 3"
    with pytest.raises(InputError, match=expected):
        attr.fit([(x, y)], epochs=1, checkpoint_dir=3, **QUIET)
    assert changed_tensors(masker_before, masker_tensors(attr)) == []
    assert blocker.read_text() == "not a folder"
    # A pathlib.Path works and is stored as a string in the checkpoints' JSON.
    attr.fit([(x, y)], epochs=1, checkpoint_dir=tmp_path / "run", **QUIET)
    assert (tmp_path / "run" / "step-000000001" / "config.json").is_file()


def test_periodic_checkpoints_keep_the_last_k(tmp_path, monkeypatch):
    written = []
    real_write = training_state.write_checkpoint

    def spy(directory, *args, **kwargs):
        written.append(Path(directory).name)
        return real_write(directory, *args, **kwargs)

    monkeypatch.setattr(training_state, "write_checkpoint", spy)
    attr = make_attr()
    ckpt = tmp_path / "ckpt"
    attr.fit(
        make_batches(5), epochs=2, checkpoint_dir=str(ckpt), checkpoint_every=2, keep_last=2, **FIT
    )
    # every 2 steps, plus one at the end of each epoch (step 10 is both)
    assert [int(n.split("-")[1]) for n in written] == [2, 4, 5, 6, 8, 10, 10]
    assert visible(ckpt) == ["step-000000008", "step-000000010"]
    assert hidden(ckpt) == []
    x, y = make_batches(1, seed=9)[0]
    for name in visible(ckpt):
        meta, _ = read_checkpoint(ckpt / name)
        assert meta["training"]["state"]["step"] == int(name.split("-")[1])
    last = RealTimeMaskAttribution.load(ckpt / "step-000000010", attr.forward_func)
    assert torch.equal(last.mask(x, target=y), attr.mask(x, target=y))


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
    with pytest.raises(CheckpointError, match="config.json"):
        RealTimeMaskAttribution.load(tmp_path / "missing", model)


# ----------------------------------------------------------------------------------- resuming


@pytest.mark.parametrize("loader_kind", ["list", "dataloader_generator", "dataloader_global"])
def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, monkeypatch, loader_kind):
    """Crash in the 2nd epoch's 4th step, resume in a fresh object: bit-identical result."""
    x = torch.cat([b[0] for b in make_batches(6)])
    y = torch.cat([b[1] for b in make_batches(6)])
    dataset = TensorDataset(x, y)

    def loader():
        if loader_kind == "list":
            return make_batches(6)
        g = torch.Generator().manual_seed(7) if loader_kind == "dataloader_generator" else None
        return DataLoader(dataset, batch_size=4, shuffle=True, generator=g)

    options = dict(epochs=2, lr_schedule="cosine", **FIT)
    ckpt = tmp_path / "ckpt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        reference = make_attr()
        reference.fit(loader(), **options)

        torch.manual_seed(123)
        crashed = make_attr()
        with monkeypatch.context() as m:
            m.setattr(trainer, "step_terms", interrupt_at_step(6 + 4))
            with pytest.raises(Interrupted):
                crashed.fit(loader(), checkpoint_dir=str(ckpt), checkpoint_every=1, **options)
        state = read_checkpoint(ckpt / "step-000000009")[0]["training"]["state"]
        assert (state["epoch"], state["batch_in_epoch"]) == (1, 3)  # mid-epoch
        shutil.copytree(ckpt / "step-000000009", tmp_path / "step9")

        torch.manual_seed(999)  # a new process starts from another global RNG state
        resumed = make_attr(seed=0)
        resumed.fit(
            loader(), resume_from=ckpt, checkpoint_dir=str(ckpt), checkpoint_every=1, **options
        )
    assert_same_masker(reference, resumed)  # bit-identical, not merely close
    assert resumed.history == reference.history
    assert visible(ckpt)[-1] == "step-000000012"

    if loader_kind == "dataloader_generator":
        # The check can fail: without replaying the epoch's random states the order differs.
        with torch.random.fork_rng(devices=[]):
            monkeypatch.setattr(trainer, "restore_epoch_rng", lambda loader, states: None)
            careless = make_attr()
            careless.fit(loader(), resume_from=tmp_path / "step9", **options)
        with pytest.raises(AssertionError, match="masker tensors differ"):
            assert_same_masker(reference, careless)


def test_resumed_history_is_the_interrupted_runs(tmp_path, monkeypatch):
    """Interrupted by Ctrl-C (a KeyboardInterrupt, not an Exception) at step 5 of 6."""
    data = [resnet_batch()] * 3
    reference = RealTimeMaskAttribution(make_test_resnet(5)).fit(data, epochs=2, **QUIET)
    crashed = RealTimeMaskAttribution(make_test_resnet(5))
    with monkeypatch.context() as m:
        m.setattr(trainer, "step_terms", interrupt_at_step(5, KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            crashed.fit(data, epochs=2, checkpoint_dir=str(tmp_path), checkpoint_every=1, **QUIET)
    assert crashed.history == []  # a failed call reports nothing
    resumed = RealTimeMaskAttribution(make_test_resnet(5))
    resumed.fit(data, epochs=2, resume_from=tmp_path, **QUIET)
    assert resumed.history == reference.history
    assert [(h["epoch"], h["steps"]) for h in resumed.history] == [(0, 3), (1, 6)]


def test_resuming_with_other_options_warns(pristine_checkpoint):
    with pytest.warns(UserWarning, match=r"epochs=1 -> 2, lr=0.01 -> 0.02"):
        make_attr().fit(make_batches(2), epochs=2, resume_from=pristine_checkpoint, lr=0.02)


SIGKILL_SCRIPT = '''
"""Trains with a checkpoint every step; stalls mid-epoch (after writing a marker) to be killed."""
import sys
import time

import torch
from torch import nn

from captum_realtime_mask import EncoderSpec, RealTimeMaskAttribution

OPTIONS = dict(epochs=3, lr=1e-2, lr_schedule="cosine", progress=False)


class Batches:
    def __init__(self, data, stall_at=None, marker=None):
        self.data, self.stall_at, self.marker, self.epoch = data, stall_at, marker, -1

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        self.epoch += 1
        for i, batch in enumerate(self.data):
            if self.marker and (self.epoch, i) == self.stall_at:
                open(self.marker, "w").close()
                time.sleep(600)
            yield batch


def build():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clf = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(8, 3),
        ).eval()
        g = torch.Generator().manual_seed(1)
        data = [
            (torch.rand(4, 3, 16, 16, generator=g), torch.randint(0, 3, (4,), generator=g))
            for _ in range(6)
        ]
    spec = EncoderSpec(kind="small_cnn", width=4, min_reduction=2)
    return RealTimeMaskAttribution(clf, num_classes=3, encoder=spec, seed=0), data


if __name__ == "__main__":
    ckpt, marker, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    attr, data = build()
    attr.fit(
        Batches(data, stall_at=(1, 3), marker=marker),
        checkpoint_dir=ckpt, checkpoint_every=1, keep_last=3, **OPTIONS
    )
'''


def test_sigkill_mid_epoch_then_resume_finishes_like_an_uninterrupted_run(tmp_path):
    script = tmp_path / "train_and_stall.py"
    script.write_text(SIGKILL_SCRIPT)
    ckpt, marker = tmp_path / "ckpt", tmp_path / "stalled"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ckpt), str(marker), str(torch.get_num_threads())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the trainer exited before stalling: {proc.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail("the trainer did not reach the stall point in 120 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    spec = importlib.util.spec_from_file_location("train_and_stall", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    # Killed in epoch 1 at batch 3: steps 7, 8, 9 kept, each complete and loadable.
    assert visible(ckpt) == ["step-000000007", "step-000000008", "step-000000009"]
    classifier = mod.build()[0].forward_func
    for name in visible(ckpt):
        read_checkpoint(ckpt / name)
        RealTimeMaskAttribution.load(ckpt / name, classifier)
    # What a kill during a save or a prune can leave behind is ignored, then cleaned.
    (ckpt / ".step-000000010.x7kq2m1a").mkdir()
    (ckpt / ".step-000000010.x7kq2m1a" / "masker.safetensors").write_bytes(b"\0" * 10)
    (ckpt / ".step-000000004.trash").mkdir()

    resumed, data = mod.build()
    resumed.fit(
        data,
        resume_from=ckpt,
        checkpoint_dir=str(ckpt),
        checkpoint_every=1,
        keep_last=3,
        **mod.OPTIONS,
    )
    assert hidden(ckpt) == []
    assert visible(ckpt) == ["step-000000016", "step-000000017", "step-000000018"]

    reference, data = mod.build()
    reference.fit(data, **mod.OPTIONS)
    assert_same_masker(reference, resumed)
    assert resumed.history == reference.history and len(resumed.history) == 3
