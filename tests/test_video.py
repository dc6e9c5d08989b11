"""The ``video`` command end to end: a generated clip in, its overlay video out; clear errors."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import timm
import torch

from captum_realtime_mask import RealTimeMaskAttribution
from captum_realtime_mask.cli import main
from captum_realtime_mask.visualization import overlay_mask

iio = pytest.importorskip("imageio.v2")
pytest.importorskip("imageio_ffmpeg")

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32  # the masker's image size; the clip's frames are 64 px and are resized to it
FRAME = 64
FRAMES = 24
FPS = 12


def moving_item_clip(n: int = FRAMES, size: int = FRAME) -> np.ndarray:
    """``(n, size, size, 3)`` uint8 frames: a Fashion-MNIST item walking over a photograph
    (a bright square over a gradient when the built-in data is not installed)."""
    try:
        from captum_realtime_mask.datasets import load_backgrounds, load_fashion_mnist

        items, _ = load_fashion_mnist("test")
        item = items[0].astype(np.float32) / 255
        background = next(iter(load_backgrounds().values()))[:size, :size]
        background = background.astype(np.float32) / 255 * 0.7 + 0.15
    except Exception:  # no Fashion-MNIST or scikit-image here: a synthetic shape
        item = np.zeros((28, 28), np.float32)
        item[6:22, 6:22] = 1
        yy, xx = np.mgrid[:size, :size] / size
        background = np.stack([xx, yy, 0.5 * np.ones_like(xx)], -1).astype(np.float32)
    colour = np.array([0.95, 0.85, 0.3], np.float32)
    alpha = np.clip(item * 3, 0, 1)[..., None]
    frames = []
    for t in range(n):
        x0 = round(2 + t / max(n - 1, 1) * (size - 28 - 4))
        frame = background.copy()
        region = frame[18:46, x0 : x0 + 28]
        frame[18:46, x0 : x0 + 28] = region * (1 - alpha) + colour * item[..., None] * alpha
        frames.append((frame * 255).round().astype(np.uint8))
    return np.stack(frames)


def write_clip(path, frames: np.ndarray, fps: float = FPS) -> None:
    writer = iio.get_writer(str(path), format="FFMPEG", fps=fps, codec="libx264", quality=8)
    for frame in frames:
        writer.append_data(frame)
    writer.close()


def read_clip(path) -> tuple[np.ndarray, dict]:
    reader = iio.get_reader(str(path), format="FFMPEG")
    meta = reader.get_meta_data()
    frames = np.stack([np.asarray(f) for f in reader])
    reader.close()
    return frames, meta


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny classifier checkpoint, a masker saved for it, and a 24-frame 64 px clip."""
    root = tmp_path_factory.mktemp("video")
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2).eval()
    ckpt = root / "classifier.pt"
    torch.save(model.state_dict(), ckpt)
    attr = RealTimeMaskAttribution(model)
    attr.fit([(torch.rand(4, 3, SIZE, SIZE), torch.tensor([0, 1, 0, 1]))], max_steps=1,
             progress=False)  # fmt: skip
    attr.save(root / "masker")
    clip = root / "clip.mp4"
    write_clip(clip, moving_item_clip())
    return {"root": root, "ckpt": ckpt, "masker": root / "masker", "clip": clip, "model": model}


def video_args(ws, *more: str) -> list[str]:
    argv = ["video", str(ws["clip"]), "--masker", str(ws["masker"]), "--model", "test_resnet"]
    argv += ["--checkpoint", str(ws["ckpt"]), "--num-classes", "2", "--image-size", str(SIZE)]
    return [*argv, "--no-progress", *more]


def error_of(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("captum-realtime-mask video: error: ")
    return last


def expected_overlays(ws, frames: np.ndarray, target=None) -> np.ndarray:
    """What the command should draw for decoded input frames: the masks at the model's size
    (the frames resized as the command resizes them), drawn over the full-size frames."""
    from captum_realtime_mask.benchmark.blackbox import BlackBox
    from captum_realtime_mask.cli.classifier import IMAGENET_MEAN, IMAGENET_STD

    model = BlackBox(ws["model"], IMAGENET_MEAN, IMAGENET_STD).eval()  # as the CLI wraps it
    attr = RealTimeMaskAttribution.load(ws["masker"], model)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    x = x.clamp(0, 1)
    with torch.no_grad():
        tgt = model(x).argmax(-1) if target is None else target
        masks = attr.mask(x, target=tgt)
    return overlay_mask(frames, masks)


def test_video_end_to_end(workspace, tmp_path, capsys):
    out = tmp_path / "sub" / "overlay.mp4"
    # A batch size that does not divide the 24 frames: the last batch is short.
    assert main(video_args(workspace, "--output", str(out), "--batch-size", "5")) == 0
    text = capsys.readouterr().out
    assert f"{FRAMES} frames of {FRAME} x {FRAME} at {FPS:g} frames/s" in text
    assert text.count("frames/s") == 3 and "end to end" in text and "masker alone" in text
    written, meta = read_clip(out)
    source, _ = read_clip(workspace["clip"])
    assert written.shape == (FRAMES, FRAME, FRAME, 3) and meta["fps"] == FPS
    # Overlays, not the input: far from the frames, close to overlay_mask's drawing of them
    # (up to H.264's losses).
    diff_input = np.abs(written.astype(int) - source).mean()
    diff_expected = np.abs(written.astype(int) - expected_overlays(workspace, source)).mean()
    assert diff_input > 20 and diff_expected < 4, (diff_input, diff_expected)


def test_video_fixed_target_and_max_frames(workspace, tmp_path, capsys):
    out = tmp_path / "overlay.mkv"
    argv = video_args(workspace, "--output", str(out), "--target", "1", "--max-frames", "10")
    assert main([*argv, "--colormap", "gray", "--alpha", "0.7"]) == 0
    assert "classes explained: 1 (10 frames)" in capsys.readouterr().out
    written, _ = read_clip(out)
    assert written.shape == (10, FRAME, FRAME, 3)


def test_missing_camera_is_one_line(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file named "97" here: the input is a camera index
    argv = video_args(workspace, "--output", str(tmp_path / "o.mp4"))
    argv[1] = "97"
    err = error_of(argv, capsys)
    assert "INPUT 97: no working camera 97" in err
    assert not (tmp_path / "o.mp4").exists()


def test_video_errors_name_the_input_or_option(workspace, tmp_path, capsys):
    out = ["--output", str(tmp_path / "o.mp4")]
    argv = video_args(workspace, *out)
    argv[1] = str(tmp_path / "nope.mp4")
    assert "no such file" in error_of(argv, capsys)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    argv[1] = str(not_video)
    err = error_of(argv, capsys)
    assert f"INPUT {not_video}: cannot read it as a video" in err
    err = error_of(video_args(workspace, "--output", str(tmp_path / "o.gif")), capsys)
    assert "--output" in err and ".mp4" in err
    err = error_of(video_args(workspace, "--output", str(workspace["clip"])), capsys)
    assert "--output" in err and "input" in err
    err = error_of(video_args(workspace, *out, "--target", "5"), capsys)
    assert "--target" in err and "[0, 1]" in err
    err = error_of(video_args(workspace, *out, "--colormap", "no_such_map"), capsys)
    assert err.split("error: ")[1].startswith("--colormap no_such_map")
    assert not (tmp_path / "o.mp4").exists()


def test_without_the_video_extra(workspace, tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_imageio(name, *args, **kwargs):
        if name.startswith("imageio"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_imageio)
    err = error_of(video_args(workspace, "--output", str(tmp_path / "o.mp4")), capsys)
    assert "captum-realtime-mask[video]" in err


def test_video_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["video", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "camera index" in out and "--batch-size" in out and "--target" in out
