"""Training custom heads: fit, measure, report, publish. Ships in the training layer (TrainLayer: numpy,
scipy, scikit-learn) with the runtime package, never in the model layer; the CLI uses it for
``refund-sorter train DIR`` (local) and ``refund-sorter models``.

- :mod:`.fit`: the logistic regression and the numbers a model version carries;
- :mod:`.report`: ``report.md`` with the confusion matrix and the coverage curve as SVG;
- :mod:`.data`: what training on the stack reads (labelled photos' and reviewed Results' recorded features);
- :mod:`.admin`: publishing versions and moving the ACTIVE pointer;
- :mod:`.job`: the training job TrainFunction runs.
"""
