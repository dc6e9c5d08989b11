r"""Speed benchmark: attribute() against the encoder alone, peak memory, training-step breakdown.

Not a test: a script that prints tables (and writes JSON with ``--json``). Every ratio is
measured within one process, with the two sides timed in alternation (paired rounds) so that
load from other processes hits both alike; throughputs are medians over rounds.

Inference: for each configuration, option and batch size, ``attribute()`` images/s (masker
forward on given targets, input checks and the input-shaped output included) against the
forward pass of the masker's encoder alone on the same batch, in the same dtype and memory
format, and their ratio (issue target: >= 0.75); peak memory of one call of each (CPU: the
process's peak resident set, reset before each call through ``/proc/self/clear_refs``; CUDA:
``torch.cuda.max_memory_allocated``); the compile time of the first call where the option
compiles; FLOPs per image of the encoder and of the rest of the masker.

Training (``--train``): one real ``fit()`` step (timed between loader fetches) against the sum
of its parts measured alone: masker forward+backward, classifier forward+backward on the fused
preserve/destroy batch, and evidence removal (alternative images + Phi, forward+backward)
(issue target: step <= 1.15x the sum).

Examples:
    python benchmarks/speed.py --quick --threads 1
    python benchmarks/speed.py --configs 64-light 224-paper --batch-sizes 1 8 64 --train
    python benchmarks/speed.py --device cuda --configs 224-paper --batch-sizes 64 256 \\
        --options fp32 channels_last bf16+channels_last compile+bf16+channels_last --train
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from captum_realtime_mask import RealTimeMaskAttribution
from captum_realtime_mask._model_state import frozen_model
from captum_realtime_mask._speed import (
    InferenceOptions,
    resolve_autocast,
)
from captum_realtime_mask.objective import alternative_images, remove_evidence


@dataclass
class Config:
    """One benchmark configuration: a timm classifier and the masker preset on top of it."""

    model: str
    size: int
    preset: str
    num_classes: int = 10


CONFIGS = {
    "64-light": Config("resnet18", 64, "light"),
    "224-paper": Config("resnet50", 224, "paper"),
    "224-light": Config("resnet50", 224, "light"),
    "64-fast": Config("resnet18", 64, "fast"),
    "224-fast": Config("resnet50", 224, "fast"),
}
OPTION_WORDS = ("fp32", "channels_last", "bf16", "fp16", "compile")


# --------------------------------------------------------------------------- measurement
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the OS, so that the next peak is the call's own."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_cpu_peak() -> bool:
    _trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak resident set) to the current RSS
        return True
    except OSError:
        return False


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> tuple[float, str]:
    """Extra peak memory of one call above what was in use before it, in MiB, and the method."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "cuda_max_allocated"
    if _reset_cpu_peak():
        before = _status_kb("VmRSS")
        fn()
        after = _status_kb("VmHWM")
        if before is not None and after is not None:
            return (after - before) / 1024, "rss_peak"
    _trim_heap()
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_max) / 1024, "maxrss_delta"


def paired_rounds(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    budget_s: float,
    min_rounds: int,
    max_rounds: int,
) -> dict[str, list[float]]:
    """Time every function once per round, in alternation, until the budget is spent."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    for r in range(max_rounds):
        for name, fn in fns.items():
            times[name].append(_timed(fn, device))
        if r + 1 >= min_rounds and time.perf_counter() - start > budget_s:
            break
    return times


def _median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


def _flops(fn: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# --------------------------------------------------------------------------- models
def build(config: Config, device: torch.device, seed: int = 0):
    """The classifier (random weights, eval mode) and the attribution with its masker."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(config.model, pretrained=False, num_classes=config.num_classes)
    model = model.eval().to(device)
    attr = RealTimeMaskAttribution(model, encoder="classifier", preset=config.preset, seed=seed)
    attr.masker.to(device)
    return model, attr


def parse_option(text: str) -> InferenceOptions:
    """``"bf16+channels_last+compile"`` -> :class:`InferenceOptions`."""
    words = text.split("+")
    bad = [w for w in words if w not in OPTION_WORDS]
    if bad:
        raise SystemExit(f"--options: unknown {bad}; use words {OPTION_WORDS} joined with '+'.")
    autocast = "bf16" if "bf16" in words else "fp16" if "fp16" in words else None
    return InferenceOptions("channels_last" in words, autocast, "compile" in words)


# --------------------------------------------------------------------------- inference
def bench_inference(config_name: str, option: str, args, device: torch.device) -> list[dict]:
    """Rows for one configuration and option over the batch sizes."""
    config = CONFIGS[config_name]
    opts = parse_option(option)
    model, attr = build(config, device)
    attr.optimize_for_inference(opts.channels_last, opts.autocast, opts.compile)
    masker = attr.masker
    dtype = resolve_autocast(device, opts.autocast)
    rows = []
    flops = None
    for bs in args.batch_sizes:
        g = torch.Generator().manual_seed(bs)
        x = torch.randn(bs, 3, config.size, config.size, generator=g).to(device)
        target = torch.randint(0, config.num_classes, (bs,), generator=g).to(device)
        x_enc = x.contiguous(memory_format=torch.channels_last) if opts.channels_last else x

        def encoder(x_enc=x_enc):
            ctx = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
            with torch.no_grad(), ctx:
                return masker.encoder(x_enc)

        def attribute(x=x, target=target):
            return attr.attribute(x, target=target)

        if flops is None:
            with torch.no_grad():
                f_enc = _flops(functools.partial(masker.encoder, x[:1]))
                f_all = _flops(functools.partial(masker, x[:1], target[:1]))
            flops = (f_enc / 1e9, (f_all - f_enc) / 1e9)
        first = _timed(attribute, device)
        warm_attr = _timed(attribute, device)
        warm_enc = min(_timed(encoder, device), _timed(encoder, device))
        compile_s = max(0.0, first - warm_attr) if opts.compile else None
        times = paired_rounds(
            {"encoder": encoder, "attribute": attribute},
            device,
            args.budget,
            args.min_rounds,
            args.max_rounds,
        )
        mem_enc, how = peak_memory_mb(encoder, device)
        mem_attr, _ = peak_memory_mb(attribute, device)
        t_enc, t_attr = statistics.median(times["encoder"]), statistics.median(times["attribute"])
        row = {
            "config": config_name,
            "model": config.model,
            "size": config.size,
            "preset": config.preset,
            "option": option,
            "batch": bs,
            "rounds": len(times["attribute"]),
            "encoder_img_s": bs / t_enc,
            "attribute_img_s": bs / t_attr,
            "ratio": _median_ratio(times["encoder"], times["attribute"]),
            "ratio_of_best": min(times["encoder"]) / min(times["attribute"]),
            "encoder_peak_mb": mem_enc,
            "attribute_peak_mb": mem_attr,
            "memory_method": how,
            "compile_s": compile_s,
            "encoder_gflop_per_img": flops[0],
            "decoder_gflop_per_img": flops[1],
            "warmup_s": {"encoder": warm_enc, "attribute": warm_attr},
        }
        rows.append(row)
        _print_inference_row(row)
    return rows


INFER_HEADER = (
    f"{'config':<17} {'option':<26} {'batch':>5} {'enc img/s':>10} {'attr img/s':>10} "
    f"{'ratio':>6} {'best':>5} {'enc MB':>7} {'attr MB':>7} {'compile s':>9} {'rounds':>6}"
)


def _print_inference_row(row: dict) -> None:
    comp = f"{row['compile_s']:.1f}" if row["compile_s"] is not None else "-"
    print(
        f"{row['config']:<17} {row['option']:<26} {row['batch']:>5} "
        f"{row['encoder_img_s']:>10.1f} {row['attribute_img_s']:>10.1f} {row['ratio']:>6.2f} "
        f"{row['ratio_of_best']:>5.2f} {row['encoder_peak_mb']:>7.0f} "
        f"{row['attribute_peak_mb']:>7.0f} {comp:>9} {row['rounds']:>6}",
        flush=True,
    )


# --------------------------------------------------------------------------- training
class _StampedLoader:
    """Yields one batch ``n`` times and records the time at every fetch (a step boundary)."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], n: int) -> None:
        self.batch, self.n, self.stamps = batch, n, []

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            self.stamps.append(time.perf_counter())
            yield self.batch


def bench_training(config_name: str, args, device: torch.device) -> dict:
    """One fit() step against the sum of its parts measured alone."""
    config = CONFIGS[config_name]
    bs = args.train_batch or (32 if config.size <= 64 else 8)
    if args.quick:
        bs = max(2, bs // 4)
    model, attr = build(config, device)
    objective = attr.objective
    masker = attr.masker
    num_classes = config.num_classes
    g = torch.Generator().manual_seed(0)
    x = torch.randn(bs, 3, config.size, config.size, generator=g).to(device)
    y = torch.randint(0, num_classes, (bs,), generator=g).to(device)
    n_real = max(1, round(bs * (1 - objective.fake_prob)))
    gen = torch.Generator(device).manual_seed(0)
    use_amp = device.type == "cuda"
    amp_dtype = resolve_autocast(device, "auto") if use_amp else None

    def amp():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    steps = args.train_steps

    def fit_chunk(channels_last: bool = False, fake_max_prob: float | None = None) -> list[float]:
        loader = _StampedLoader((x, y), steps + 2)
        attr.objective = dataclasses.replace(objective, fake_max_prob=fake_max_prob)
        attr.fit(
            loader,
            max_steps=steps + 2,
            device=device,
            progress=False,
            seed=0,
            channels_last=channels_last,
        )
        _sync(device)
        stamps = loader.stamps
        return [b - a for a, b in zip(stamps[1:], stamps[2:])]  # first step: warm-up

    selector = y.clone()
    xr = x[:n_real]
    grad_mask = torch.rand(bs, 1, config.size, config.size, generator=g).to(device)

    def masker_fb():
        masker.train()
        with amp():
            out = masker(x, selector)
            loss = (out.mask.float() * grad_mask).mean() + out.small_mask.float().mean()
            loss = loss + out.gate_logit.float().mean()
        loss.backward()
        masker.zero_grad(set_to_none=True)
        masker.eval()

    mask_leaf = torch.rand(n_real, 1, config.size, config.size, generator=g).to(device)
    mask_leaf.requires_grad_(True)
    grad_images = torch.randn(2 * n_real, 3, config.size, config.size, generator=g).to(device)

    def evidence_fb():
        with amp():
            preserved = remove_evidence(xr, mask_leaf, alternative_images(xr, objective, gen))
            destroyed = remove_evidence(xr, 1 - mask_leaf, alternative_images(xr, objective, gen))
            both = torch.cat([preserved, destroyed])
        both.backward(grad_images.to(both.dtype))
        mask_leaf.grad = None

    images = torch.randn(2 * n_real, 3, config.size, config.size, generator=g).to(device)

    def classifier_fb():
        inp = images.detach().requires_grad_(True)
        with frozen_model(model), amp():
            logits = model(inp).float()
            loss = F.log_softmax(logits, 1)[:, 0].mean()
        loss.backward()

    parts = {"masker_fwd_bwd": masker_fb, "classifier_fwd_bwd": classifier_fb}
    parts["evidence_removal"] = evidence_fb
    for fn in parts.values():
        fn()
    step_times: list[float] = []
    cl_times: list[float] = []  # the same steps with FitConfig.channels_last, interleaved
    # And with ObjectiveConfig.fake_max_prob, at 1.0: every wrong class stays a candidate, so
    # the steps keep their real/fake split (the untrained classifier gives near-uniform
    # probabilities, and a lower bound would turn fakes into real selectors) and only the
    # extra classifier forward pass on the fake samples is timed.
    fm_times: list[float] = []
    part_times: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(args.train_rounds):
        step_times += fit_chunk()
        cl_times += fit_chunk(channels_last=True)
        fm_times += fit_chunk(fake_max_prob=1.0)
        for name, fn in parts.items():
            for _ in range(max(1, steps // 2)):
                part_times[name].append(_timed(fn, device))
    step = statistics.median(step_times)
    step_cl = statistics.median(cl_times)
    medians = {k: statistics.median(v) for k, v in part_times.items()}
    total = sum(medians.values())
    row = {
        "config": config_name,
        "batch": bs,
        "real_selectors": n_real,
        "classifier_batch": 2 * n_real,
        "step_s": step,
        "fit_img_s": bs / step,
        "parts_s": medians,
        "sum_parts_s": total,
        "ratio_step_to_sum": step / total,
        "steps_timed": len(step_times),
        "step_s_channels_last": step_cl,
        "channels_last_step_ratio": _median_ratio(cl_times, step_times),
        "step_s_fake_max_prob": statistics.median(fm_times),
        "fake_max_prob_step_ratio": _median_ratio(fm_times, step_times),
    }
    print(f"\ntraining step breakdown: {config_name}, batch {bs} ({n_real} real selectors)")
    for name, t in medians.items():
        print(f"  {name:<22} {t * 1000:>9.1f} ms  ({100 * t / total:4.1f}% of the sum)")
    print(f"  {'sum of parts':<22} {total * 1000:>9.1f} ms")
    print(f"  {'fit() step':<22} {step * 1000:>9.1f} ms  ({bs / step:.1f} images/s)")
    print(f"  step / sum = {step / total:.3f}  (target <= 1.15)")
    print(
        f"  fit() step with channels_last {step_cl * 1000:.1f} ms; median of the "
        f"step-by-step ratios to the plain steps: {row['channels_last_step_ratio']:.3f}",
        flush=True,
    )
    print(
        f"  fit() step with fake_max_prob=1.0 {row['step_s_fake_max_prob'] * 1000:.1f} ms; "
        f"median step-by-step ratio to the plain steps: {row['fake_max_prob_step_ratio']:.3f}",
        flush=True,
    )
    return row


# --------------------------------------------------------------------------- main
def machine() -> dict:
    """What ran the benchmark."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"model name\s*:\s*(.*)", f.read())
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["64-light", "224-paper"], choices=CONFIGS)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=None)
    p.add_argument(
        "--options",
        nargs="+",
        default=None,
        help="inference options, words of " + ", ".join(OPTION_WORDS) + " joined with '+' "
        "(default: fp32 channels_last compile on CPU; more with bf16 on CUDA)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--quick", action="store_true", help="small batches, few rounds")
    p.add_argument("--budget", type=float, default=None, help="seconds of paired rounds per row")
    p.add_argument("--min-rounds", type=int, default=None)
    p.add_argument("--max-rounds", type=int, default=30)
    p.add_argument("--no-inference", action="store_true", help="skip the inference table")
    p.add_argument("--train", action="store_true", help="also the training-step breakdown")
    p.add_argument("--train-batch", type=int, default=None)
    p.add_argument("--train-steps", type=int, default=None, help="timed fit() steps per round")
    p.add_argument("--train-rounds", type=int, default=2)
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    args = p.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.batch_sizes is None:
        args.batch_sizes = [1, 8] if args.quick else [1, 8, 64]
    if args.options is None:
        args.options = ["fp32", "channels_last", "compile"]
        if device.type == "cuda":
            args.options = [
                "fp32",
                "channels_last",
                "bf16",
                "bf16+channels_last",
                "fp16+channels_last",
                "compile+bf16+channels_last",
            ]
        if args.quick:
            args.options = args.options[:2]
    args.budget = args.budget if args.budget is not None else (3.0 if args.quick else 20.0)
    args.min_rounds = args.min_rounds or (2 if args.quick else 3)
    args.train_steps = args.train_steps or (2 if args.quick else 6)
    warnings.filterwarnings("ignore", category=UserWarning)

    info = machine()
    print("machine:", json.dumps(info))
    print(f"device {device}\n")
    results: dict = {"machine": info, "argv": sys.argv, "inference": [], "training": []}
    if not args.no_inference:
        print(INFER_HEADER)
        for name in args.configs:
            for option in args.options:
                results["inference"].extend(bench_inference(name, option, args, device))
        flops = {}
        for row in results["inference"]:
            flops[row["config"]] = (row["encoder_gflop_per_img"], row["decoder_gflop_per_img"])
        print("\nGFLOP per image (encoder / rest of the masker; a FLOP is a multiply or an add):")
        for name, (fe, fd) in flops.items():
            print(f"  {name:<17} {fe:7.2f} / {fd:7.2f}  -> ratio bound ~{fe / (fe + fd):.2f}")
        print("\nratio: median over paired rounds of t(encoder) / t(attribute), target >= 0.75;")
        print("best: the same from each side's fastest round; MB: extra peak memory of one call.")
    if args.train:
        for name in args.configs:
            results["training"].append(bench_training(name, args, device))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
