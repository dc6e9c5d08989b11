"""The ``video`` command: explain a video file or a camera frame by frame, write the overlays.

Frames are read with imageio's ffmpeg plugin (the ``video`` extra: ``imageio`` and
``imageio-ffmpeg``, whose wheel ships its own ffmpeg), ``--batch-size`` at a time. Each batch is
resized to the classifier's ``--image-size`` (a square, as ``explain`` and ``train`` resize),
explained for ``--target`` or for the class the classifier predicts in each frame, and the mask
is drawn over the frame **at the frame's own size** (the mask resized to it, bilinear) with
:func:`~captum_realtime_mask.visualization.overlay_mask`. The overlay video is written with
H.264 at the input's frame rate. At the end the command prints the frames per second reached
end to end (reading, classifier and masker, overlay, writing) and for the classifier and the
masker alone.

The masker folder, the classifier it was trained for (``classifier.json``), the device check
and the error reporting are those of ``explain``.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from captum_realtime_mask.cli.classifier import fill_from_record, load_classifier, read_record
from captum_realtime_mask.cli.maskers import load_masker, masker_num_classes
from captum_realtime_mask.cli.overlay import check_colormap
from captum_realtime_mask.cli.paths import check_output_file, existing
from captum_realtime_mask.cli.usage import CLIError

__all__ = ["VIDEO_SUFFIXES", "VideoStats", "cmd_video", "video_io"]

#: The ``--output`` suffixes written (all with H.264 in yuv420p).
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")

#: Frames per second written when the input does not say (some cameras).
_DEFAULT_FPS = 25.0

#: Most pixels overlaid in one vectorised call (bounds the memory of large frames).
_OVERLAY_PIXELS = 1 << 23


@dataclass
class VideoStats:
    """What a run of the command did, and how fast.

    Attributes:
        frames: Frames explained and written.
        size: ``(width, height)`` of the frames.
        fps: Frame rate written (the input's).
        seconds: Wall time from opening the input to closing the output.
        model_seconds: Time in the classifier and the masker alone.
        classes: Frames per explained class.
    """

    frames: int = 0
    size: tuple[int, int] = (0, 0)
    fps: float = _DEFAULT_FPS
    seconds: float = 0.0
    model_seconds: float = 0.0
    classes: Counter = field(default_factory=Counter)

    @property
    def end_to_end_fps(self) -> float:
        """Frames per second, reading and writing included."""
        return self.frames / self.seconds if self.seconds > 0 else math.inf

    @property
    def model_fps(self) -> float:
        """Frames per second of the classifier and the masker alone."""
        return self.frames / self.model_seconds if self.model_seconds > 0 else math.inf


def video_io() -> Any:
    """The v2 API of imageio with its ffmpeg plugin, or a CLIError naming the ``video`` extra."""
    try:
        import imageio.v2 as iio
        import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary the plugin runs)
    except ImportError as exc:
        raise CLIError(
            f"video needs imageio and imageio-ffmpeg ({exc}): "
            "pip install 'captum-realtime-mask[video]'"
        ) from None
    return iio


def cmd_video(args: argparse.Namespace) -> int:
    """Explain ``args.input`` frame by frame and write the overlay video to ``args.output``.

    Returns:
        0. Ctrl-C ends a camera's recording normally (the video is written).

    Raises:
        KeyboardInterrupt: Ctrl-C during a file's processing, after the frames done were
            written and reported (``main`` exits with 130).
        CLIError: A user error, before any frame is explained where it can be.
    """
    iio = video_io()
    source, camera = _source(args.input)
    output = _output(args.output, source)
    check_colormap(args.colormap)
    masker = existing(args.masker, "--masker", folder=True)
    fill_from_record(args, read_record(masker))
    batch_size = args.batch_size or (1 if camera else 32)
    reader = _open_reader(iio, source, camera, args.input)
    threads = torch.get_num_threads()
    used = _threads(args.threads, args.device, threads)
    torch.set_num_threads(used)
    try:
        classifier = load_classifier(args, masker_num_classes(masker))
        model = classifier.model.to(args.device)
        attr = load_masker(masker, model, args.device, classifier.image_size)
        if args.target is not None and not 0 <= args.target < attr.num_classes:
            raise CLIError(f"--target: classes must be in [0, {attr.num_classes - 1}].")
        size = classifier.image_size
        stats, interrupted = _run(args, iio, reader, output, model, attr, size, batch_size)
    finally:
        reader.close()
        torch.set_num_threads(threads)
    _report(stats, output, args.device, batch_size, used, interrupted)
    if interrupted and not camera:
        raise KeyboardInterrupt
    return 0


def _threads(requested: int | None, device: torch.device, current: int) -> int:
    """``--threads``; by default on the CPU one core is left to the ffmpeg reader and writer."""
    if requested:
        return requested
    return max(1, current - 1) if device.type == "cpu" else current


def _source(text: str) -> tuple[Path | int, bool]:
    """``INPUT`` as a file path, or as a camera index (an integer naming no file)."""
    path = Path(text).expanduser()
    if path.exists():
        return existing(path, "INPUT"), False
    if re.fullmatch(r"\d+", text.strip()):
        return int(text), True
    raise FileNotFoundError(f"INPUT: no such file: {path} (a camera is given by its index: 0)")


def _output(text: str, source: Path | int) -> Path:
    """``--output``, checked: a video suffix, writable, not the input."""
    path = check_output_file(text, "--output")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise CLIError(
            f"--output {path}: expected a video file ending in {', '.join(VIDEO_SUFFIXES)}."
        )
    if isinstance(source, Path) and path.exists() and path.resolve() == source.resolve():
        raise CLIError(f"--output {path}: is the input video; write to another file.")
    return path


def _open_reader(iio: Any, source: Path | int, camera: bool, text: str) -> Any:
    """The input opened (ffmpeg started); one CLIError line if ffmpeg cannot read it."""
    uri = f"<video{source}>" if camera else str(source)
    try:
        return iio.get_reader(uri, format="FFMPEG")
    except (OSError, IndexError, RuntimeError, ValueError) as exc:
        reason = _ffmpeg_reason(str(exc))
        if camera:
            raise CLIError(f"INPUT {text}: no working camera {source} ({reason}).") from None
        raise CLIError(f"INPUT {source}: cannot read it as a video ({reason}).") from None


def _ffmpeg_reason(text: str) -> str:
    """The lines of an ffmpeg error that say what went wrong (not its version banner)."""
    lines = []
    for line in text.split("=== stderr ===")[-1].splitlines():
        match = re.match(r"\s*\[[^\]]* @ 0x[0-9a-f]+\]\s*(.*)", line)
        if match and match.group(1) not in lines:
            lines.append(match.group(1).strip())
    if lines:
        return "; ".join(lines[-2:])
    first = text.strip().splitlines()
    return first[0] if first else "ffmpeg failed"


def _run(
    args: argparse.Namespace,
    iio: Any,
    reader: Any,
    output: Path,
    model: torch.nn.Module,
    attr: Any,
    size: int,
    batch_size: int,
) -> tuple[VideoStats, bool]:
    """Read, explain, overlay and write every frame; returns the stats and if interrupted."""
    from tqdm.auto import tqdm

    from captum_realtime_mask.visualization import overlay_mask

    meta = reader.get_meta_data()
    fps = float(meta.get("fps") or 0)
    stats = VideoStats(fps=fps if math.isfinite(fps) and fps > 0 else _DEFAULT_FPS)
    total = _frame_count(meta, stats.fps, args.max_frames)
    device = args.device
    writer = None
    interrupted = False
    start = time.perf_counter()
    bar = tqdm(total=total, desc="video", unit="frame", disable=args.no_progress)
    try:
        for frames in _batches(reader, batch_size, args.max_frames):
            x = _model_input(frames, size, device)
            t0 = time.perf_counter()
            with torch.no_grad():
                if args.target is None:
                    target = model(x).argmax(-1)
                else:
                    target = torch.full((len(x),), args.target, device=device)
                masks = attr.mask(x, target=target)
            masks = masks.cpu()  # waits for the device
            stats.model_seconds += time.perf_counter() - t0
            if writer is None:
                stats.size = (frames.shape[2], frames.shape[1])
                writer = _open_writer(iio, output, stats.fps)
            for start_frame in range(0, len(frames), _overlay_chunk(frames)):
                part = slice(start_frame, start_frame + _overlay_chunk(frames))
                drawn = overlay_mask(
                    frames[part], masks[part], colormap=args.colormap, alpha=args.alpha
                )
                for picture in drawn:
                    writer.append_data(picture)
            stats.frames += len(frames)
            stats.classes.update(target.tolist())
            bar.update(len(frames))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    stats.seconds = time.perf_counter() - start
    if stats.frames == 0 and not interrupted:
        raise CLIError(f"INPUT {args.input}: no frames could be read.")
    return stats, interrupted


def _frame_count(meta: dict[str, Any], fps: float, max_frames: int | None) -> int | None:
    """Frames to expect (for the progress bar): from the duration, at most ``max_frames``."""
    duration = meta.get("duration")
    count = None
    if isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0:
        count = max(1, round(duration * fps))
    if max_frames is not None:
        count = min(count, max_frames) if count is not None else max_frames
    return count


def _batches(reader: Any, batch_size: int, max_frames: int | None) -> Iterator[np.ndarray]:
    """``(N, H, W, 3)`` uint8 batches of the reader's frames, ``max_frames`` in all at most."""
    batch: list[np.ndarray] = []
    for seen, frame in enumerate(reader, start=1):
        batch.append(np.asarray(frame)[..., :3])
        if len(batch) == batch_size or seen == max_frames:
            yield np.stack(batch)
            batch = []
            if seen == max_frames:
                return
    if batch:
        yield np.stack(batch)


def _model_input(frames: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """Frames ``(N, H, W, 3)`` uint8 as the classifier's ``(N, 3, size, size)`` in [0, 1]."""
    x = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float().div_(255)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True).clamp_(0, 1)
    return x.contiguous()


def _overlay_chunk(frames: np.ndarray) -> int:
    """Frames overlaid in one call: all of a batch of small frames, fewer of large ones."""
    return max(1, _OVERLAY_PIXELS // (frames.shape[1] * frames.shape[2]))


def _open_writer(iio: Any, output: Path, fps: float) -> Any:
    """An H.264 writer at ``fps``; odd frame sides are rounded up to even by ffmpeg's scaler."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return iio.get_writer(
        str(output),
        format="FFMPEG",
        fps=fps,
        codec="libx264",
        quality=7,
        macro_block_size=2,
        ffmpeg_log_level="error",
    )


def _report(
    stats: VideoStats,
    output: Path,
    device: torch.device,
    batch_size: int,
    threads: int,
    interrupted: bool,
) -> None:
    """Print what was written and the frames per second reached."""
    width, height = stats.size
    note = " (stopped by Ctrl-C)" if interrupted else ""
    print(
        f"wrote {output}: {stats.frames} frames of {width} x {height} at {stats.fps:g} "
        f"frames/s{note}"
    )
    common = ", ".join(f"{k} ({n} frames)" for k, n in stats.classes.most_common(5))
    if common:
        print(f"classes explained: {common}")
    print(
        f"speed: {stats.end_to_end_fps:.1f} frames/s end to end (reading, classifier and "
        f"masker, overlay, writing); {stats.model_fps:.1f} frames/s for the classifier and "
        f"masker alone (batch {batch_size}, {device}"
        f"{f', {threads} threads' if device.type == 'cpu' else ''})"
    )
