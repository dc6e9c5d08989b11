"""The scenes suite: several objects per image, multi-label black boxes, every class scored.

* :mod:`.runner`: :func:`~.runner.run_scenes_benchmark` trains or loads each black box and
  its maskers, scores every method and writes the report;
* :mod:`.requests`: which (scene, class) pairs every method is asked to explain;
* :mod:`.scoring`: one method's row (per-object localisation, pointing, selectivity,
  absent-class area, deletion, insertion, ROAD, speed);
* :mod:`.report`: ``results.md`` and ``figure.png``.

``captum-realtime-mask benchmark --suite scenes`` runs it.
"""

from captum_realtime_mask.benchmark.scenes.runner import run_scenes_benchmark

__all__ = ["run_scenes_benchmark"]
