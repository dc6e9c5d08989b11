"""Sphinx configuration of the captum-realtime-mask documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.

At build time this file writes ``docs/_generated/`` (ignored by git): one API page per public
module (every name of its ``__all__``), the ``--help`` text of each CLI subcommand, and the
body of the benchmark page (``docs/benchmark_results.md`` if present, else the committed
``results/full/results.md`` and ``figure.png``, else a placeholder).

Tutorials in ``tutorials/`` are rendered by sphinx-gallery; they are executed (with their
figures) only when ``CAPTUM_REALTIME_MASK_DOCS_RUN_TUTORIALS=1``, because training even tiny
models takes minutes on a shared CPU. ``CAPTUM_REALTIME_MASK_TUTORIAL_SIZE=tiny`` makes that
execution a quick smoke run.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import captum_realtime_mask  # noqa: E402

project = "captum-realtime-mask"
author = "captum-realtime-mask developers"
copyright = "2025, captum-realtime-mask developers"
release = captum_realtime_mask.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]
try:
    import sphinx_gallery  # noqa: F401

    extensions.append("sphinx_gallery.gen_gallery")
    HAVE_GALLERY = True
except ImportError:  # pragma: no cover
    HAVE_GALLERY = False

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "benchmark_results.md",
    "_generated/benchmark_body.md",  # included by benchmark.md, not a page of its own
    "_generated/scenes_body.md",  # included by benchmark_scenes.md
]
templates_path: list[str] = []

# No network at build time: intersphinx stays off.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"show-inheritance": False}
autodoc_mock_imports: list[str] = []
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # dataclass "Attributes:" as fields, not duplicate attribute entries
napoleon_use_rtype = False
napoleon_attr_annotations = True

try:
    import furo  # noqa: F401

    html_theme = "furo"
except ImportError:  # pragma: no cover
    html_theme = "alabaster"
html_title = f"captum-realtime-mask {release}"
html_static_path: list[str] = []

RUN_TUTORIALS = os.environ.get("CAPTUM_REALTIME_MASK_DOCS_RUN_TUTORIALS", "0") == "1"
if HAVE_GALLERY:
    sphinx_gallery_conf = {
        "examples_dirs": ["../tutorials"],
        "gallery_dirs": ["auto_tutorials"],
        "filename_pattern": r"/plot_",
        "plot_gallery": RUN_TUTORIALS,
        "download_all_examples": False,
        "remove_config_comments": True,
        "within_subsection_order": "FileNameSortKey",
        "abort_on_example_error": True,
        "matplotlib_animations": False,
        "show_memory": False,
        "min_reported_time": 1,
    }
    exclude_patterns += ["auto_tutorials/*.ipynb", "auto_tutorials/*.py", "auto_tutorials/*.zip"]

# ------------------------------------------------------------------------ generated pages
API_MODULES = [
    ("captum_realtime_mask", "The package: the attribution class and its configuration"),
    ("captum_realtime_mask.masker", "The masking network"),
    ("captum_realtime_mask.objective", "The objective and evidence removal"),
    ("captum_realtime_mask.training", "The training loop"),
    ("captum_realtime_mask.iterative", "Per-image mask optimisation"),
    ("captum_realtime_mask.metrics", "Metrics: saliency metric, localisation, faithfulness"),
    ("captum_realtime_mask.datasets", "Datasets: cluttered Fashion-MNIST"),
    ("captum_realtime_mask.metrics.external", "Faithfulness from pytorch-grad-cam and Quantus"),
    ("captum_realtime_mask.visualization", "Overlays: masks drawn over their images"),
    ("captum_realtime_mask.checkpoint", "Checkpoint files"),
    ("captum_realtime_mask.export", "Export: ONNX files and torch.export programs"),
    ("captum_realtime_mask.hub", "Sharing maskers: folders and the Hugging Face Hub"),
    ("captum_realtime_mask.benchmark.blackbox", "Benchmark black boxes"),
    ("captum_realtime_mask.benchmark.methods", "Benchmark methods"),
    ("captum_realtime_mask.benchmark.settings", "Benchmark settings of the maskers"),
    ("captum_realtime_mask.benchmark.runner", "Benchmark runner"),
    ("captum_realtime_mask.cli", "Command line"),
]


def _directive(obj: object) -> str:
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return "autoexception"
        return "autoclass"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "autofunction"
    return "autodata"


def _data_directive(modname: str, name: str, obj: object) -> list[str]:
    """Document a constant from its ``#:`` comment or docstring, else by its value."""
    from sphinx.pycode import ModuleAnalyzer

    for candidate in sorted(m for m in sys.modules if m.startswith(modname)):
        module = sys.modules[candidate]
        if getattr(module, name, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(candidate).find_attr_docs()
        except Exception:
            continue
        if ("", name) in docs:
            return [f".. autodata:: {candidate}.{name}", "   :no-value:", ""]
    value = repr(obj)
    if len(value) > 70:
        value = value[:67] + "..."
    return [f".. py:data:: {name}", f"   :value: {value}", ""]


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def _write_api() -> None:
    documented: dict[int, str] = {}
    index = ["API reference", "=============", "", ".. toctree::", "   :maxdepth: 1", ""]
    for modname, title in API_MODULES:
        module = importlib.import_module(modname)
        names = list(getattr(module, "__all__", []))
        heading = f"``{modname}``"
        lines = [heading, "=" * len(heading), "", title + ".", ""]
        lines += [f".. automodule:: {modname}", "   :no-members:", ""]
        lines += [f".. currentmodule:: {modname}", ""]
        for name in names:
            if name.startswith("__"):
                continue
            obj = getattr(module, name)
            key = id(obj)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and key in documented:
                lines += [f"* ``{name}``: see :py:obj:`{documented[key]}`.", ""]
                continue
            kind = _directive(obj)
            if kind == "autodata":
                lines += _data_directive(modname, name, obj)
                continue
            lines.append(f".. {kind}:: {name}")
            if kind == "autoclass":
                lines.append("   :members:")
            lines.append("")
            if inspect.isclass(obj) or inspect.isfunction(obj):
                documented[key] = f"{modname}.{name}"
        page = "api_" + modname.replace(".", "_")
        _write_if_changed(GENERATED / f"{page}.rst", "\n".join(lines) + "\n")
        index.append(f"   {page}")
    _write_if_changed(GENERATED / "api.rst", "\n".join(index) + "\n")


def _write_cli_help() -> None:
    from captum_realtime_mask.cli import build_parser

    parser = build_parser()
    os.environ["COLUMNS"] = "88"
    commands = [None, "demo", "benchmark", "train", "explain", "evaluate", "video"]
    for command in commands:
        buffer = io.StringIO()
        argv = ["--help"] if command is None else [command, "--help"]
        with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
            parser.parse_args(argv)
        _write_if_changed(GENERATED / f"cli_{command or 'main'}.txt", buffer.getvalue())


def _write_benchmark(suite: str = "full", body: str = "benchmark_body.md") -> None:
    """A results page's body: ``results/<suite>/results.md`` and its figure, or a note."""
    own = DOCS / "benchmark_results.md"
    results = ROOT / "results" / suite / "results.md"
    figure = ROOT / "results" / suite / "figure.png"
    if own.is_file() and suite == "full":
        text = "```{include} ../benchmark_results.md\n:relative-images:\n```\n"
    elif results.is_file():
        # One level down: the page has its own title.
        lines = results.read_text().splitlines()
        text = "\n".join("#" + line if line.startswith("#") else line for line in lines)
        if figure.is_file():
            shutil.copyfile(figure, GENERATED / f"{suite}_figure.png")
            text += (
                f"\n\n```{{image}} /_generated/{suite}_figure.png\n"
                ":alt: Masks of every method\n```\n"
            )
    else:
        command = "--mode full" if suite == "full" else "--suite scenes --mode full"
        text = (
            f":::{{note}}\nThese results are pending: they appear here once "
            f"``results/{suite}/results.md`` is committed. Run "
            f"``captum-realtime-mask benchmark {command} --output results/{suite}`` to "
            "produce them.\n:::\n"
        )
    _write_if_changed(GENERATED / body, text)


def _write_results_toctree() -> None:
    """``docs/performance.md`` is written separately: list it only when it exists."""
    pages = ["/benchmark", "/benchmark_scenes"]
    pages += ["/performance"] if (DOCS / "performance.md").is_file() else []
    text = "```{toctree}\n:maxdepth: 1\n:caption: Results\n\n" + "\n".join(pages) + "\n```\n"
    _write_if_changed(GENERATED / "results_toctree.md", text)


GENERATED.mkdir(exist_ok=True)
_write_results_toctree()
_write_api()
_write_cli_help()
_write_benchmark()
_write_benchmark("scenes", "scenes_body.md")
