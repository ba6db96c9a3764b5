"""The trainer's exceptions: one tree, so callers can catch TrainerError for any of them."""


class TrainerError(Exception):
    """Base of every error the trainer raises on purpose."""


class FitError(TrainerError):
    """A training run that cannot start or resume: bad config, empty split, foreign checkpoint."""


class MetricsError(TrainerError, ValueError):
    """Inputs that cannot be scored: mismatched lengths, labels other than 0/1, an unknown pooling."""


class SearchError(TrainerError):
    """A search that cannot run: bad storage URL, an existing study of another kind, no finished trial."""


class VideoReadError(TrainerError):
    """A video that cannot be opened or decoded."""


class NoFramesError(VideoReadError):
    """A video that opens but holds no frame."""


class ModelConfigError(TrainerError, ValueError):
    """An unknown architecture name or a config value outside what the family can build."""


class EvaluateError(TrainerError):
    """Runs that cannot be evaluated or compared: a bad --run, a missing split, protocols that do not pair."""


class TreeError(TrainerError, ValueError):
    """A Celeb-DF tree with missing parts, a malformed test list, or a video name of unknown form."""


class StoreError(TrainerError):
    """A face store that is missing, unreadable, corrupt, of another schema, or built with other options."""
