"""The cluttered Fashion-MNIST benchmark, top-down.

* :mod:`.runner`: :func:`~.runner.run_benchmark`, which trains or loads each black box and its
  maskers, scores every method and writes the report;
* :mod:`.config`: :class:`~.config.BenchmarkConfig`, what a run does (quick and full presets);
* :mod:`.settings`: the maskers' objective weights, fit() options and encoders;
* :mod:`.blackbox`: the black-box classifiers, trained from scratch and cached;
* :mod:`.methods`: the baselines, each as ``explain(images, targets) -> map``.
"""
