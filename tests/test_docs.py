"""The Sphinx site builds with warnings as errors, executing the tutorials at their tiny size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sphinx_build_without_warnings(tmp_path):
    env = {
        **os.environ,
        "CAPTUM_REALTIME_MASK_DOCS_RUN_TUTORIALS": "1",
        "CAPTUM_REALTIME_MASK_TUTORIAL_SIZE": "tiny",
        "CAPTUM_REALTIME_MASK_CACHE": str(tmp_path / "cache"),  # nothing cached in advance
        "MPLBACKEND": "Agg",
    }
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    html = tmp_path / "html"
    for page in ["index", "getting_started", "concepts", "training", "evaluation", "cli"]:
        assert (html / f"{page}.html").is_file(), page
    assert (html / "_generated" / "api_captum_realtime_mask.html").is_file()
    gallery = html / "auto_tutorials"
    for tutorial in ["plot_quickstart", "plot_imagenet_classifier", "plot_video_saliency"]:
        page = (gallery / f"{tutorial}.html").read_text()
        # Executed: its figures were rendered into the page.
        figures = sorted((html / "_images").glob(f"sphx_glr_{tutorial}_[0-9]*.png"))
        assert figures, tutorial
        assert all(f.name in page for f in figures), tutorial
