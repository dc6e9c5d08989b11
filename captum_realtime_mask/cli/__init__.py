"""The ``captum-realtime-mask`` command line: demo, benchmark, train, explain, evaluate, video.

Every subcommand has ``--help``, and ``captum-realtime-mask --version`` prints the version.
Errors the user can fix (a missing file, a wrong shape, a broken checkpoint, a device this
machine does not have) end with exit code 2 and a one-line message on stderr, without a
traceback; an option value out of its range is an argparse usage error (exit code 2, usage
lines first).

The modules, each with one job:

* :mod:`~captum_realtime_mask.cli.app`: :func:`main`, the checks every command shares.
* :mod:`~captum_realtime_mask.cli.parser`: :func:`build_parser`, the options and their types.
* :mod:`~captum_realtime_mask.cli.benchmark`, :mod:`~captum_realtime_mask.cli.train`,
  :mod:`~captum_realtime_mask.cli.explain`, :mod:`~captum_realtime_mask.cli.evaluate`,
  :mod:`~captum_realtime_mask.cli.video`: the commands.
* :mod:`~captum_realtime_mask.cli.classifier`: the classifier from the options or the masker
  folder's record, and its normalisation.
* :mod:`~captum_realtime_mask.cli.maskers`, :mod:`~captum_realtime_mask.cli.data`,
  :mod:`~captum_realtime_mask.cli.paths`, :mod:`~captum_realtime_mask.cli.overlay`: the masker
  folder, the images, the paths and the overlays.
* :mod:`~captum_realtime_mask.cli.usage`: how an error is reported.

Examples:
    .. code-block:: bash

        captum-realtime-mask demo --output runs/demo
        captum-realtime-mask train --builtin --blackbox resnet --epochs 2 --output runs/masker
        captum-realtime-mask explain --masker runs/masker --builtin --blackbox resnet photo.png
        captum-realtime-mask evaluate --masker runs/masker --builtin --blackbox resnet --json m.json
"""

from captum_realtime_mask.cli.app import main
from captum_realtime_mask.cli.parser import build_parser

__all__ = ["build_parser", "main"]
