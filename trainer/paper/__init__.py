"""The paper's chain (`dfwatch-train all`, `recipes/paper.toml`): Celeb-DF v2 parsing, frame sampling, face crops with
duplicates removed, augmentation, the Optuna architecture search, evaluation (the paper's table plus AUC) and plots."""
