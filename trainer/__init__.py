"""trainer (``dfwatch-train``): three chains on engines/, each in a sub-package and driven by one recipe.

``trainer/paper/``: the paper's chain, Celeb-DF (celebdf, frames) -> face store (dataset, dedupe, splits, augment)
-> search -> fit -> evaluate (plots) -> export -> engines, as ``dfwatch-train all`` (``recipes/paper.toml``).
``trainer/pack/``: the default pack's classifier, real faces of the shared media (realfaces) -> fit on self-blends
with capture simulation (selfblend, capture) -> export -> calibrate -> validate on held-out real fakes (realval,
holdout, conditions), and the INT8 builds' check (int8), ``recipes/deepfake_classifier.toml``.
``trainer/detector/``: pseudo-labelled data (data) -> training (train) -> the served size (evaluate),
``recipes/face_detector.toml``. Shared at the top: the face store (store), fit, metrics, the shared media and their
splits (realmedia), the MTCNN teacher (teacher), the model registry (``trainer.models``) and ``commands/`` (one
module per subcommand, its options one dataclass that makes its flags and reads ``--config FILE.toml``; ``pack``
runs a recipe). Studies that did not ship live outside the package, in ``research/``, beside their numbers.
"""
