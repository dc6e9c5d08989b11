r"""Serving benchmark: the exported masker in onnxruntime against eager and compiled PyTorch.

Not a test: a script that prints a table (and writes JSON with ``--json``). For each
configuration it builds a timm classifier with random weights and the default masker on it
(``encoder="classifier"``: the classifier's own frozen backbone), exports that masker to ONNX
(:func:`captum_realtime_mask.export.export_masker`) and times, side by side in one process:

- ``eager``: ``attr.mask(x, target=c)``, the public PyTorch call (float32);
- ``compile``: the same call after ``attr.optimize_for_inference(compile=True)`` (the
  masker's decoder compiled with :func:`torch.compile`; the classifier's backbone stays eager);
- ``onnxruntime``: the ONNX file in an onnxruntime session (CPU execution provider, float32,
  all graph optimisations);
- ``onnxruntime-fp16``: the file exported with ``dtype=torch.float16`` (weights and arithmetic
  in float16, inputs and output float32), where onnxruntime can run it. Where its CPU
  provider has no float16 kernel for a node (Conv on x86) it inserts Casts and computes the
  node in float32; ``fp16_cast_nodes`` counts them before and after its optimisations;
- with ``--variants``: the float32 file with onnxruntime's graph optimisations off and at the
  basic level (constant folding, Conv+BatchNorm fusion), to see what they bring.

Batch 1: median latency over rounds (ms); batch 32: images/s from the median round. Every
round calls each method once, in alternation, so that load from other processes hits all of
them alike; ``vs eager`` is the median over rounds of ``t(eager) / t(method)`` (above 1:
faster than eager). Threads are explicit: ``torch.set_num_threads(T)`` and the sessions'
``intra_op_num_threads = T`` (``inter_op_num_threads = 1``, sequential execution).

Examples:
    python benchmarks/serving.py --threads 1 --json serving.json
    python benchmarks/serving.py --configs 64 --batch-sizes 1 --variants --budget 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import machine, paired_rounds  # noqa: E402  (the speed benchmark's helpers)

from captum_realtime_mask import RealTimeMaskAttribution  # noqa: E402
from captum_realtime_mask.export import export_masker  # noqa: E402


@dataclass
class Config:
    """A timm classifier (random weights), its input size and the masker on it."""

    model: str
    size: int
    num_classes: int
    encoder: str = "classifier"
    preset: str = "light"


CONFIGS = {
    # The speed benchmark's 64-light: timm resnet18, 10 classes, 64 px.
    "64": Config("resnet18", 64, 10),
    # ImageNet-sized: 224 px, 1000 classes.
    "224": Config("resnet18", 224, 1000),
    "224-resnet50": Config("resnet50", 224, 1000),
    # A masker with an encoder of its own (timm resnet18 trained from scratch).
    "64-own-encoder": Config("resnet18", 64, 10, encoder="resnet18"),
}
METHODS = ("eager", "compile", "onnxruntime", "onnxruntime-fp16")
VARIANTS = ("onnxruntime-no-graph-opt", "onnxruntime-basic-opt")


def build(config: Config, seed: int = 0) -> tuple[torch.nn.Module, RealTimeMaskAttribution]:
    """The classifier (eval mode) and an attribution with its masker (untrained: timing only)."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(config.model, pretrained=False, num_classes=config.num_classes)
    model.eval()
    attr = RealTimeMaskAttribution(
        model, encoder=config.encoder, pretrained=False, preset=config.preset, seed=seed
    )
    attr._trained = True  # the weights do not matter for speed; silences the warning
    return model, attr


def _session(path: Path, threads: int, level: str = "all"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _count_ops(path: Path, op: str) -> int:
    import onnx

    return sum(n.op_type == op for n in onnx.load(str(path)).graph.node)


def _optimised_ops(path: Path, threads: int, op: str, folder: Path, level: str = "all") -> int:
    """How many ``op`` nodes there are after onnxruntime's graph optimisations at ``level``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.log_severity_level = 3  # not the warning that the dump is hardware specific
    out = folder / f"{path.stem}.ort-optimised.onnx"
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _count_ops(out, op)


def prepare(config_name: str, args, folder: Path) -> dict:
    """Build the maskers and sessions of one configuration; the callables take (x, c)."""
    config = CONFIGS[config_name]
    model, attr = build(config)
    _, attr_compiled = build(config)  # same seed: the same masker weights
    attr_compiled.optimize_for_inference(compile=True)
    info: dict = {"methods": {}, "prep_s": {}, "notes": {}}
    fns: dict[str, Callable] = {
        "eager": lambda x, c: attr.mask(x, target=c),
        "compile": lambda x, c: attr_compiled.mask(x, target=c),
    }
    t0 = time.perf_counter()
    path = export_masker(attr, folder / f"{config_name}.onnx", image_size=config.size)
    info["prep_s"]["onnxruntime"] = time.perf_counter() - t0
    info["onnx_mb"] = path.stat().st_size / 2**20
    info["batchnorm_nodes"] = {
        "in_file": _count_ops(path, "BatchNormalization"),
        "after_ort_optimisation": _optimised_ops(path, args.threads, "BatchNormalization", folder),
    }

    def ort_fn(session):
        def run(x, c):
            return torch.from_numpy(
                session.run(["masks"], {"images": x.numpy(), "classes": c.numpy()})[0]
            )

        return run

    fns["onnxruntime"] = ort_fn(_session(path, args.threads))
    if args.variants:
        fns["onnxruntime-no-graph-opt"] = ort_fn(_session(path, args.threads, "none"))
        fns["onnxruntime-basic-opt"] = ort_fn(_session(path, args.threads, "basic"))
    if not args.no_fp16:
        t0 = time.perf_counter()
        path16 = export_masker(
            attr, folder / f"{config_name}-fp16.onnx", image_size=config.size, dtype="fp16"
        )
        info["prep_s"]["onnxruntime-fp16"] = time.perf_counter() - t0
        # Where the CPU provider lacks a float16 kernel (Conv on x86), it inserts Casts and
        # computes that node in float32: count them.
        info["fp16_cast_nodes"] = {
            "in_file": _count_ops(path16, "Cast"),
            "after_ort_basic_optimisation": _optimised_ops(
                path16, args.threads, "Cast", folder, "basic"
            ),
        }
        try:
            session16 = _session(path16, args.threads)
            probe = torch.zeros(1, 3, config.size, config.size)
            ort_fn(session16)(probe, torch.zeros(1, dtype=torch.long))
            fns["onnxruntime-fp16"] = ort_fn(session16)
        except Exception as exc:  # an fp16 kernel missing on this CPU
            info["notes"]["onnxruntime-fp16"] = f"not supported on CPU: {exc}"
    info["fns"] = fns
    info["model"] = model
    return info


def bench(config_name: str, prepared: dict, args) -> list[dict]:
    """Rows for one configuration over the batch sizes."""
    config = CONFIGS[config_name]
    fns = prepared["fns"]
    rows = []
    for bs in args.batch_sizes:
        g = torch.Generator().manual_seed(bs)
        x = torch.randn(bs, 3, config.size, config.size, generator=g)
        c = torch.randint(0, config.num_classes, (bs,), generator=g)
        reference = fns["eager"](x, c)
        diffs, first = {}, {}
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = fn(x, c)  # compile: compiles for this shape here
            first[name] = time.perf_counter() - t0
            diffs[name] = float((out - reference).abs().max())
            for _ in range(args.warmup):
                fn(x, c)
        calls = {name: (lambda fn=fn, x=x, c=c: fn(x, c)) for name, fn in fns.items()}
        budget = args.budget * (1 if bs == 1 else 2)
        times = paired_rounds(calls, torch.device("cpu"), budget, args.min_rounds, args.max_rounds)
        for name in fns:
            t = statistics.median(times[name])
            speedup = statistics.median(a / b for a, b in zip(times["eager"], times[name]))
            row = {
                "config": config_name,
                "model": config.model,
                "size": config.size,
                "num_classes": config.num_classes,
                "encoder": config.encoder,
                "batch": bs,
                "method": name,
                "rounds": len(times[name]),
                "latency_ms": 1000 * t,
                "img_s": bs / t,
                "vs_eager": speedup,
                "max_abs_diff": diffs[name],
                "first_call_s": first[name],
            }
            rows.append(row)
            _print_row(row)
        for name, note in prepared["notes"].items():
            row = {"config": config_name, "batch": bs, "method": name, "note": note}
            rows.append(row)
            print(f"{config_name:<15} {bs:>5} {name:<25} {note[:70]}", flush=True)
    return rows


HEADER = (
    f"{'config':<15} {'batch':>5} {'method':<25} {'ms/batch':>9} {'img/s':>8} {'vs eager':>8} "
    f"{'max|diff|':>9} {'1st call s':>10} {'rounds':>6}"
)


def _print_row(row: dict) -> None:
    print(
        f"{row['config']:<15} {row['batch']:>5} {row['method']:<25} {row['latency_ms']:>9.2f} "
        f"{row['img_s']:>8.1f} {row['vs_eager']:>8.2f} {row['max_abs_diff']:>9.1e} "
        f"{row['first_call_s']:>10.1f} {row['rounds']:>6}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["64", "224"], choices=CONFIGS)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    p.add_argument("--budget", type=float, default=20.0, help="seconds of rounds (x2 above 1)")
    p.add_argument("--min-rounds", type=int, default=5)
    p.add_argument("--max-rounds", type=int, default=200)
    p.add_argument("--warmup", type=int, default=3, help="calls per method before timing")
    p.add_argument("--variants", action="store_true", help="onnxruntime graph-opt variants")
    p.add_argument("--no-fp16", action="store_true", help="skip the float16 ONNX file")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import onnxruntime

    info = machine()
    info["onnxruntime"] = onnxruntime.__version__
    info["threads"] = {"torch": torch.get_num_threads(), "onnxruntime_intra_op": args.threads}
    print("machine:", json.dumps(info))
    results: dict = {"machine": info, "argv": sys.argv, "rows": [], "configs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            prepared = prepare(name, args, Path(tmp))
            keys = ("prep_s", "notes", "onnx_mb", "batchnorm_nodes", "fp16_cast_nodes")
            meta = {k: prepared[k] for k in keys if k in prepared}
            results["configs"][name] = meta
            print(f"\n{name}: {CONFIGS[name]}; {json.dumps(meta)}")
            print(HEADER)
            results["rows"].extend(bench(name, prepared, args))
    results["load_avg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print("\nvs eager: median over rounds of t(eager) / t(method); max|diff|: against eager's")
    print("masks on the same batch; 1st call s: the first call at this batch size (compiles).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
