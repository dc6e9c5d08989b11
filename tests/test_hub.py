"""Sharing maskers: save_pretrained / from_pretrained on folders, the Hub path with fakes."""

import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
from conftest import FIT, make_attr, make_batches, tiny_classifier

from captum_realtime_mask import CheckpointError, InputError, RealTimeMaskAttribution
from captum_realtime_mask.hub import SHARED_FILES


@pytest.fixture(scope="module")
def trained():
    attr = make_attr()
    attr.fit(make_batches(2), max_steps=2, **FIT)
    return attr


def masks_of(attr):
    x, y = make_batches(1, seed=7)[0]
    return attr.mask(x, target=y)


def test_save_pretrained_then_from_pretrained_gives_the_same_masks(trained, tmp_path):
    folder = tmp_path / "masker"
    trained.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(SHARED_FILES)
    card = (folder / "README.md").read_text()
    assert "library_name: captum-realtime-mask" in card and "3 classes" in card
    again = RealTimeMaskAttribution.from_pretrained(folder, tiny_classifier())
    assert torch.equal(masks_of(again), masks_of(trained))
    assert again.history == trained.history


def test_a_users_model_card_is_kept_and_the_masker_replaced(trained, tmp_path):
    folder = tmp_path / "masker"
    make_attr(seed=1).save_pretrained(folder)
    (folder / "README.md").write_text("my own card\n")
    trained.save_pretrained(folder)
    assert (folder / "README.md").read_text() == "my own card\n"
    again = RealTimeMaskAttribution.from_pretrained(str(folder), tiny_classifier())
    assert torch.equal(masks_of(again), masks_of(trained))


def test_from_pretrained_keeps_loads_checks(trained, tmp_path):
    folder = tmp_path / "masker"
    trained.save_pretrained(folder)
    with pytest.raises(CheckpointError, match="trained for a classifier with 3 classes"):
        RealTimeMaskAttribution.from_pretrained(folder, tiny_classifier(num_classes=5))
    weights = folder / "masker.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="masker.safetensors"):
        RealTimeMaskAttribution.from_pretrained(folder, tiny_classifier())


def test_a_repository_id_is_downloaded_through_snapshot_download(trained, tmp_path, monkeypatch):
    folder = tmp_path / "snapshot"
    trained.save_pretrained(folder)
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    again = RealTimeMaskAttribution.from_pretrained(
        "someone/masker", tiny_classifier(), revision="v1", local_files_only=True
    )
    assert torch.equal(masks_of(again), masks_of(trained))
    ((repo_id, kwargs),) = calls
    assert repo_id == "someone/masker"
    assert kwargs["revision"] == "v1" and kwargs["local_files_only"] is True
    assert sorted(kwargs["allow_patterns"]) == sorted(SHARED_FILES)
    assert kwargs["library_name"] == "captum-realtime-mask"


def test_an_uncached_repository_offline_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"name_or_path: 'nobody/no-such-masker' is not"):
        RealTimeMaskAttribution.from_pretrained(
            "nobody/no-such-masker", tiny_classifier(), local_files_only=True, cache_dir=tmp_path
        )


@pytest.mark.parametrize("name", ["not a repo id!", 3])
def test_neither_folder_nor_repository_id_is_an_input_error(name):
    with pytest.raises(InputError, match="name_or_path: "):
        RealTimeMaskAttribution.from_pretrained(name, tiny_classifier(), local_files_only=True)


class FakeApi:
    """Records what push_to_hub asks of the Hub and keeps a copy of the uploaded files."""

    uploads: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        self.uploads.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        self.uploads.append(("upload_folder", repo_id, kwargs, files))
        return type("CommitInfo", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})


def test_push_to_hub_creates_the_repo_and_uploads_the_shared_files(trained, monkeypatch, tmp_path):
    FakeApi.uploads = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = trained.push_to_hub("someone/masker", private=True, token="t0k")
    assert url == "https://hub.example/someone/masker/commit/1"
    (kind, repo, created), (kind2, repo2, upload, files) = FakeApi.uploads
    assert (kind, repo, created["private"], created["exist_ok"]) == (
        "create_repo",
        "someone/masker",
        True,
        True,
    )
    assert (kind2, repo2, sorted(upload["allow_patterns"])) == (
        "upload_folder",
        "someone/masker",
        sorted(SHARED_FILES),
    )
    assert sorted(files) == sorted(SHARED_FILES)
    # What was uploaded loads into the same masker.
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert json.loads(files["config.json"])["kind"] == "RealTimeMaskAttribution"
    again = RealTimeMaskAttribution.from_pretrained(tmp_path, tiny_classifier())
    assert torch.equal(masks_of(again), masks_of(trained))


def test_push_to_hub_needs_a_namespaced_repo_id(trained):
    with pytest.raises(InputError, match="repo_id: expected a repository id"):
        trained.push_to_hub("masker")
