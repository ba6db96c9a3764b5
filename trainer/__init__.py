"""trainer (``dfwatch-train``): three chains on engines/, each driven by one recipe (``dfwatch-train pack``).

The paper's chain: Celeb-DF (celebdf, frames) -> face store (dataset, dedupe, store, splits, augment) -> search
-> fit -> evaluate (metrics, plots) -> export -> engines, as ``dfwatch-train all`` (``recipes/paper.toml``). The
default pack's classifier: real faces from the shared media (realmedia, realfaces) -> fit on self-blends with
capture simulation (selfblend, capture) -> export -> calibrate -> validate on held-out real fakes (realval,
holdout, conditions), ``recipes/deepfake_classifier.toml``. The detector: pseudo-labels (teacher: MTCNN,
detector_data) -> detector_train -> detector_eval -> int8, ``recipes/face_detector.toml``. Shared by all three:
the model registry (``trainer.models``), fit, export and ``commands/`` (one module per subcommand). Studies that
did not ship live outside the package, in ``research/``, beside the numbers they produced.
"""
