"""Training: ``train_one_epoch``, ``evaluate_epoch`` and ``fit(cfg)`` on a face-crop HDF5 store.

Adam, binary cross-entropy on logits, the store's "train" split for training and "val" for
validation; the learning rate is constant (the paper) or follows a cosine schedule after a
one-epoch warm-up. After each epoch, BatchNorm's running statistics are recomputed under the
epoch's final weights (``precise_bn``). The best epoch is the one with the lowest validation loss, or, when
``fit`` gets a ``select`` callable (e.g. trainer.pack.realval.RealFakeValidator: AUC on real
manipulated faces), the one with the highest selection score.

A checkpoint (``checkpoint.pt``) is written after every epoch; it carries the model (last and
best epoch), optimiser, epoch, resolved config, the dataset fingerprint and the history, so
``fit(..., resume=True)`` continues where it stopped and refuses a checkpoint made on another
dataset. The search (trainer/paper/search.py) calls the same ``fit``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import FitError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dfwatch-classifier-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw")
WEIGHTS = ("best", "last")  # a checkpoint's weights: of the epoch chosen as best, or of the last one
PRECISE_BN_BATCHES = 32  # train batches whose statistics replace BatchNorm's running averages after each epoch
RETIRED_FIELDS = {"stored_share": 0.0}  # fields of studies that did not ship (research/README.md) -> the value run


@dataclass(frozen=True)
class TrainConfig:
    """What is trained and how; stored in every checkpoint and written by the search as best_config.json."""

    model: str = "paper_cnn"  # registered architecture (trainer.models.list_models())
    model_args: dict[str, Any] = field(default_factory=dict)  # overrides of the architecture's config
    input_size: int | None = None  # network input side; None = the store's crop size
    lr: float = 1e-3  # learning rate (of the head, where the model names one: see backbone_lr)
    weight_decay: float = 0.0  # weight decay (Adam: L2 in the gradient; AdamW: decoupled)
    optimizer: str = "adam"  # "adam" (the paper) or "adamw" (fine-tuning a pretrained backbone)
    backbone_lr: float = 1.0  # learning rate of a pretrained model's backbone, as a fraction of lr (head_prefixes)
    augment: str = "none"  # on-the-fly augmentation preset of the train split (trainer.paper.augment)
    epochs: int = 20  # epochs to train in total (a resumed run trains the rest)
    batch_size: int = 8  # crops per optimiser step
    seed: int = 0  # torch seed for the initial weights, shuffling and dropout
    self_blend: bool = False  # add one self-blended fake per real crop, on the fly (trainer.pack.selfblend)
    capture: bool = False  # show every crop at a drawn native size and codec, blends made there (trainer.pack.capture)
    schedule: str = "constant"  # learning rate: "constant" or "cosine" (to 0 at the last epoch, after 1 warm-up epoch)
    epoch_samples: int | None = None  # train items per epoch, a fresh random subset each epoch; None = all
    capture_look: float = 0.0  # with capture: share of crops whose whole picture is sharpened (half) or softened (half)
    blend_sharpen: float = 0.5  # with self_blend: share of blends whose source is sharpened (the rest are blurred)

    def __post_init__(self) -> None:
        try:  # plain JSON values (tuples -> lists), so a config compares equal after a round trip
            object.__setattr__(self, "model_args", json.loads(json.dumps(dict(self.model_args))))
        except (TypeError, ValueError) as exc:
            raise FitError(f"model_args must be JSON values, got {self.model_args!r}") from exc
        if "input_size" in self.model_args:
            raise FitError("give the input size as TrainConfig.input_size (--input-size), not in model_args")
        if self.epochs < 1 or self.batch_size < 1:
            raise FitError(f"epochs ({self.epochs}) and batch_size ({self.batch_size}) must be >= 1")
        if not self.lr > 0:
            raise FitError(f"lr must be > 0, got {self.lr}")
        if self.input_size is not None and self.input_size < 8:
            raise FitError(f"input_size must be >= 8, got {self.input_size}")
        if self.epoch_samples is not None and self.epoch_samples < 1:
            raise FitError(f"epoch_samples must be >= 1 (or None for all), got {self.epoch_samples}")
        if self.optimizer not in OPTIMIZERS:
            raise FitError(f"unknown optimizer {self.optimizer!r}; valid: {list(OPTIMIZERS)}")
        if not 0.0 < self.backbone_lr <= 1.0:
            raise FitError(f"backbone_lr is a fraction of lr in (0, 1], got {self.backbone_lr}")
        if not 0.0 <= self.capture_look <= 1.0 or (self.capture_look and not self.capture):
            raise FitError(f"capture_look is a share in [0, 1] and needs capture, got {self.capture_look}")
        if not 0.0 <= self.blend_sharpen <= 1.0:
            raise FitError(f"blend_sharpen is a share in [0, 1], got {self.blend_sharpen}")
        if self.schedule not in SCHEDULES:
            raise FitError(f"unknown schedule {self.schedule!r}; valid: {list(SCHEDULES)}")
        if self.capture and not self.self_blend:
            raise FitError(
                "capture simulates how the self-blended fakes and the reals reach the classifier: "
                "it needs self_blend (--self-blend)"
            )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """A config from its dict; a retired field (``RETIRED_FIELDS``, in older checkpoints and manifests) is
        accepted at the value that is now the only behaviour, and refused at any other."""
        raw = dict(raw)
        for name, only in RETIRED_FIELDS.items():
            if name in raw and raw.pop(name) != only:
                raise FitError(f"{name} was a study that did not ship (research/README.md); valid: [{only!r}]")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(valid))
        if unknown:
            raise FitError(f"unknown training config fields {unknown}; valid: {valid}")
        return cls(**raw)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config JSON: a TrainConfig object, or the search's best_config.json (its "config")."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FitError(f"cannot read training config {path}: {exc}") from exc
        if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
            raw = raw["config"]
        if not isinstance(raw, dict):
            raise FitError(f"training config {path} must hold a JSON object")
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def build_model(self) -> Any:
        """The untrained network: (B, 3, S, S) float32 in [0, 1] -> (B, 1) logits."""
        from trainer.models import create_model

        if self.input_size is None:
            raise FitError("input_size is unresolved; call fit() or resolve it from the store first")
        return create_model(self.model, input_size=self.input_size, **self.model_args)


@dataclass
class FitResult:
    config: TrainConfig  # resolved (input size filled in)
    history: list[dict[str, float]]  # one record per epoch: epoch, train_loss, train_acc, val_loss, val_acc, seconds
    best_epoch: int  # 1-based epoch with the lowest validation loss (with ``select``: the highest "select")
    best_val_loss: float  # validation loss of the best epoch
    checkpoint: Path | None  # None when fit ran without an output directory (search trials)
    model: Any  # the trained torch module, weights of the last epoch


def resolve_device(name: str) -> str:
    import torch

    if name not in DEVICES:
        raise FitError(f"unknown device {name!r}; valid: {list(DEVICES)}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise FitError("device 'cuda' asked for, but torch sees no CUDA GPU; use --device cpu")
    return name


def use_runtime(device: str, threads: int | None) -> str:
    """Give torch ``threads`` CPU threads (where set) and resolve ``device``: the torch device a run uses.

    What ``fit``, ``evaluate_checkpoint`` and ``run_search`` do first with their runtime options (the
    ``workers`` they take go to ``make_loader``); like those options it changes where and how fast, never what
    is computed.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    return resolve_device(device)


def make_augment(name: str, *, seed: int | None = None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The on-the-fly augmentation callable (uint8 HWC RGB -> same) for a preset name; None for "none"."""
    from trainer.paper import augment

    fn = augment.build_augment(name, seed=seed)  # ValueError naming the valid presets
    return None if name == "none" else fn


def augment_choices() -> list[str]:
    """Valid ``TrainConfig.augment`` values: "none" plus the presets of trainer.paper.augment."""
    from trainer.paper import augment

    return list(augment.PRESETS)


def make_loader(
    data: Path,
    split: str,
    *,
    input_size: int,
    batch_size: int,
    augment: str = "none",
    shuffle: bool,
    seed: int = 0,
    workers: int = 0,
    self_blend: bool = False,
    capture: bool = False,
    samples: int | None = None,
    capture_look: float = 0.0,
    blend_sharpen: float = 0.5,
) -> Any:
    """A DataLoader of (B, 3, S, S) float32 crops and (B,) float32 labels for one split of the store.

    ``self_blend`` adds one self-blended fake per real crop (trainer.pack.selfblend): drawn from ``seed``
    on "train", the same on every read on the other splits. ``capture`` shows every crop as a feed
    would (trainer.pack.capture), fakes blended at the native size; shuffled, each real crop then comes
    in one batch with its fake (``PairSampler``). ``samples`` (with ``shuffle``) draws that many
    items without replacement, a new subset for each ``seed``. ``blend_sharpen`` is the share of
    self-blends whose source is sharpened rather than blurred.
    """
    import torch
    from torch.utils.data import DataLoader

    from trainer.store import FaceDataset, FaceStore

    # seeded per epoch in-process, so a resumed run draws what an uninterrupted one would; worker
    # processes draw their own (a shared seed would repeat one sequence in every worker)
    if capture and not self_blend:
        raise FitError(
            "capture simulates how the self-blended fakes and the reals reach the classifier: it needs self_blend"
        )
    fn = make_augment(augment, seed=seed if workers == 0 else None) if split == "train" else None
    dataset: Any = FaceDataset(data, split, augment=None if capture else fn, input_size=None if capture else input_size)
    if len(dataset) == 0:
        raise FitError(f"{data}: the {split!r} split is empty; rebuild the store with rows in train, val and test")
    if self_blend:
        from trainer.pack.capture import CaptureConfig
        from trainer.pack.selfblend import SelfBlendDataset

        with FaceStore(data) as store:
            margin = float(store.attrs["crop_margin"])
        look = CaptureConfig(p_sharpen=capture_look / 2, p_soften=capture_look / 2) if capture else None
        dataset = SelfBlendDataset(
            dataset,
            margin=margin,
            seed=seed,
            capture=look,
            size=input_size if capture else None,
            augment=fn if capture else None,
            sharpen=blend_sharpen,
        )
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if shuffle and capture:
        from trainer.pack.selfblend import PairSampler

        sampler = PairSampler(dataset, pairs=None if samples is None else samples // 2, generator=generator)
        shuffle = False
    elif shuffle and samples is not None and samples < len(dataset):
        from torch.utils.data import RandomSampler

        sampler, shuffle = RandomSampler(dataset, num_samples=samples, generator=generator), False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        persistent_workers=False,
    )


def make_optimizer(model: Any, cfg: TrainConfig) -> Any:
    """Adam or AdamW over the trainable parameters. A model whose ``head_prefixes`` name its head (a pretrained
    backbone under a new head) gets two groups: the head at ``cfg.lr``, the rest at ``cfg.lr * cfg.backbone_lr``
    (each group's ``lr_scale``, which the schedule multiplies)."""
    import torch

    heads = tuple(getattr(model, "head_prefixes", ()))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise FitError(f"model {cfg.model!r} has no trainable parameter (all frozen?)")
    head = [p for n, p in named if heads and n.startswith(heads)]
    body = [p for n, p in named if not (heads and n.startswith(heads))]
    groups = [
        {"params": ps, "lr": cfg.lr * scale, "lr_scale": scale}
        for ps, scale in ((body, cfg.backbone_lr if heads else 1.0), (head, 1.0))
        if ps
    ]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(schedule: str, progress: float, *, epochs: int) -> float:
    """The learning rate's multiplier at ``progress`` epochs into a run of ``epochs`` (0 <= progress <= epochs)."""
    if schedule == "constant":
        return 1.0
    if progress < 1.0 and epochs > 1:  # linear warm-up over the first epoch
        return max(progress, 0.01)
    span = max(epochs - 1, 1e-9)
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress - 1.0, 0.0) / span, 1.0)))


def _to_input(x: Any, device: str) -> Any:
    """A (B, 3, S, S) batch on ``device``; channels-last on the CPU, where convolutions run about 1.5x faster."""
    import torch

    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device == "cpu" else x


def train_one_epoch(
    model: Any,
    loader: Any,
    optimizer: Any,
    *,
    device: str,
    desc: str = "train",
    progress: bool = True,
    set_lr: Callable[[float], None] | None = None,
) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean BCE loss, accuracy at 0.5) over its samples.

    ``set_lr(fraction)`` is called before each step with the fraction of the epoch done (a schedule).
    """
    import torch
    from tqdm import tqdm

    model.train()
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    total, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, file=sys.stderr, disable=None if progress else True)
    steps = max(len(loader), 1)
    for step, (x, y) in enumerate(bar):
        if set_lr is not None:
            set_lr(step / steps)
        x, y = _to_input(x, device), y.to(device, non_blocking=True)  # (B, 3, S, S), (B,)
        logits = model(x).reshape(-1)  # (B, 1) -> (B,)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        (loss / len(y)).backward()
        optimizer.step()
        total += float(loss.detach())
        correct += int(((logits.detach() > 0).float() == y).sum())
        seen += len(y)
        bar.set_postfix(loss=f"{total / seen:.4f}", acc=f"{correct / seen:.3f}")
    return total / max(seen, 1), correct / max(seen, 1)


def predict(model: Any, loader: Any, *, device: str, desc: str = "predict", progress: bool = True) -> np.ndarray:
    """Logits (n,) float64 of every sample of ``loader``, in its order (eval mode, no gradients)."""
    import torch
    from tqdm import tqdm

    model.eval()
    out: list[np.ndarray] = []
    with torch.inference_mode():
        bar = tqdm(loader, desc=desc, unit="batch", leave=False, file=sys.stderr, disable=None if progress else True)
        for x, _ in bar:  # disable=None: no bar (no carriage returns) when stderr is a log file
            out.append(model(_to_input(x, device)).reshape(-1).double().cpu().numpy())  # (B, 1) -> (B,)
    return np.concatenate(out) if out else np.zeros(0)


def precise_bn(model: Any, loader: Any, *, device: str, batches: int = PRECISE_BN_BATCHES) -> bool:
    """Replace every BatchNorm layer's running mean and variance by their plain average over ``batches``
    batches of ``loader`` under the current weights ("precise BN"). The running averages that training
    keeps trail weights that moved under them; evaluation and the exported model use these statistics.
    Returns False (and changes nothing) for a model without BatchNorm."""
    import torch

    model.train()  # a frozen part of the model stays in eval mode: its statistics are kept as loaded
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    if not norms:
        return False
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    with torch.no_grad():
        for k, (x, _) in enumerate(loader):
            if k >= batches:
                break
            model(_to_input(x, device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return True


def evaluate_epoch(model: Any, loader: Any, *, device: str, progress: bool = True) -> tuple[float, float]:
    """(mean BCE loss, accuracy at 0.5) of ``model`` on ``loader``."""
    logits = predict(model, loader, device=device, desc="val", progress=progress)
    labels = loader.dataset.labels.astype(np.float64)  # (n,) in loader order (no shuffling)
    # BCE with logits, numerically stable: max(z, 0) - z*y + log(1 + exp(-|z|))
    loss = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
    acc = ((logits > 0) == (labels > 0.5)).mean()
    return float(loss.mean()), float(acc)


def dataset_info(data: Path) -> dict[str, Any]:
    """What a checkpoint records about the store it was trained on (fingerprint = dataset hash)."""
    from trainer.store import FaceStore

    with FaceStore(data) as store:
        attrs = store.attrs
        return {
            "path": str(Path(data).resolve()),
            "fingerprint": store.fingerprint(),
            "crop_size": store.crop_size,
            "crop_margin": float(attrs["crop_margin"]),
            "whole_frames": bool(attrs["whole_frames"]),
            "split_protocol": str(attrs["split_protocol"]),
            "rows": {s: int(len(store.indices(s))) for s in ("train", "val", "test")},
        }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``fit``; FitError when it is missing or not one."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FitError(f"checkpoint {path} does not exist; train one with `dfwatch-train fit`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FitError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise FitError(f"{path} is not a dfwatch classifier checkpoint (written by `dfwatch-train fit`)")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise FitError(f"checkpoint {path} has version {ckpt.get('version')}, this dfwatch reads {CHECKPOINT_VERSION}")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], *, weights: str = "best") -> Any:
    """The network of a checkpoint in eval mode, with the ``weights`` of the "best" or "last" epoch."""
    if weights not in WEIGHTS:
        raise FitError(f"unknown weights {weights!r}; valid: {list(WEIGHTS)}")
    model = TrainConfig.from_dict(ckpt["config"]).build_model()
    model.load_state_dict(ckpt["best"]["model"] if weights == "best" else ckpt["model"])
    return model.eval()


def _save(path: Path, payload: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint


def fit(
    cfg: TrainConfig,
    *,
    data: str | Path,
    out: str | Path | None,
    resume: bool = False,
    device: str = "auto",
    threads: int | None = None,
    workers: int = 0,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    select: Callable[[Any], dict[str, float]] | None = None,
) -> FitResult:
    """Train ``cfg`` on the store ``data``; checkpoint each epoch into ``out`` (None: keep nothing on disk).

    ``on_epoch(record)`` is called after each epoch (after its checkpoint is saved) with the
    history record; the search reports to Optuna and prunes from it. ``select(model)`` (the model
    in eval mode) returns measures that join each epoch's record; its ``"select"`` value (higher
    is better) then picks the best epoch instead of the validation loss. ``resume`` continues
    from ``out/checkpoint.pt``: its dataset fingerprint must match ``data``, and its config may
    differ from ``cfg`` in ``epochs`` only.
    """
    import torch

    dev = use_runtime(device, threads)
    data = Path(data)
    info = dataset_info(data)
    if cfg.input_size is None:
        cfg = replace(cfg, input_size=info["crop_size"])
    make_augment(cfg.augment)  # an unknown preset fails here, before any work
    ckpt_path = Path(out) / CHECKPOINT_NAME if out is not None else None
    torch.manual_seed(cfg.seed)
    model = cfg.build_model().to(dev)
    placed = getattr(getattr(model, "cfg", None), "margin", None)  # a family that places regions in the crop
    if placed is not None and abs(placed - info["crop_margin"]) > 1e-6:
        raise FitError(
            f"model {cfg.model!r} places its regions for crop margin {placed}, but {data} was cut with "
            f"margin {info['crop_margin']}; pass --model-arg margin={info['crop_margin']}"
        )
    if dev == "cpu":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": 0, "val_loss": float("inf"), "select": -float("inf"), "model": None}
    if resume:
        if ckpt_path is None:
            raise FitError("resume needs an output directory holding checkpoint.pt")
        if ckpt_path.is_file():
            ckpt = load_checkpoint(ckpt_path)
            _check_resumable(ckpt, cfg, info, ckpt_path)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            history, best = list(ckpt["history"]), dict(ckpt["best"])
            logger.info("resuming %s at epoch %d of %d", ckpt_path, len(history) + 1, cfg.epochs)
        else:
            logger.info("no checkpoint at %s yet: starting from scratch", ckpt_path)
    elif ckpt_path is not None and ckpt_path.is_file():
        raise FitError(f"{ckpt_path} exists; pass --resume to continue it, or choose another --out")
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)

    size = int(cfg.input_size)  # resolved above
    if cfg.self_blend and info["whole_frames"]:
        logger.warning(
            "self-blending whole frames: the blend mask sits in the frame's centre, where the face may "
            "not be; self-blend suits face-crop stores"
        )
    val = make_loader(
        data,
        "val",
        input_size=size,
        batch_size=max(cfg.batch_size, 32),
        shuffle=False,
        workers=workers,
        self_blend=cfg.self_blend,
        capture=cfg.capture,
        capture_look=cfg.capture_look,
        blend_sharpen=cfg.blend_sharpen,
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "fit %s (%s parameters, input %d) on %s: %d train / %d val crops, %d epochs, batch %d, lr %g, "
        "augment %s%s%s, %s schedule, device %s",
        cfg.model,
        f"{n_params:,}",
        size,
        data,
        info["rows"]["train"],
        info["rows"]["val"],
        cfg.epochs,
        cfg.batch_size,
        cfg.lr,
        cfg.augment,
        " + self-blend" if cfg.self_blend else "",
        " + capture" if cfg.capture else "",
        cfg.schedule,
        dev,
    )
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        started = time.monotonic()
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout and augmentation: same on resume
        train = make_loader(
            data,
            "train",
            input_size=size,
            batch_size=cfg.batch_size,
            augment=cfg.augment,
            shuffle=True,
            seed=cfg.seed * 100_003 + epoch,
            workers=workers,
            self_blend=cfg.self_blend,
            capture=cfg.capture,
            samples=cfg.epoch_samples,
            capture_look=cfg.capture_look,
            blend_sharpen=cfg.blend_sharpen,
        )
        desc = f"epoch {epoch}/{cfg.epochs}"

        def set_lr(fraction: float, epoch: int = epoch) -> None:
            for group in optimizer.param_groups:
                factor = lr_factor(cfg.schedule, epoch - 1 + fraction, epochs=cfg.epochs)
                group["lr"] = cfg.lr * group.get("lr_scale", 1.0) * factor

        train_loss, train_acc = train_one_epoch(
            model, train, optimizer, device=dev, desc=desc, progress=progress, set_lr=set_lr
        )
        stats = make_loader(
            data,
            "train",
            input_size=size,
            batch_size=max(cfg.batch_size, 32),
            augment=cfg.augment,
            shuffle=True,
            seed=cfg.seed * 100_003 + epoch + 50_000,
            self_blend=cfg.self_blend,
            capture=cfg.capture,
            samples=PRECISE_BN_BATCHES * max(cfg.batch_size, 32),
            capture_look=cfg.capture_look,
            blend_sharpen=cfg.blend_sharpen,
        )
        precise_bn(model, stats, device=dev)
        val_loss, val_acc = evaluate_epoch(model, val, device=dev, progress=progress)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
        }
        if select is not None:
            record.update(select(model.eval()))
        record["seconds"] = round(time.monotonic() - started, 3)
        history.append(record)
        if _better(record, best, by_select=select is not None):
            best = {
                "epoch": epoch,
                "val_loss": val_loss,
                "select": record.get("select", -float("inf")),
                "model": _cpu_state(model),
            }
        logger.info(
            "%s: train loss %.4f acc %.3f | val loss %.4f acc %.3f%s | %.1fs",
            desc,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            f" | select {record['select']:.4f}" if "select" in record else "",
            record["seconds"],
        )
        if ckpt_path is not None:
            _save(ckpt_path, _checkpoint(cfg, info, epoch, model, optimizer, best, history))
        if on_epoch is not None:
            on_epoch(record)
    if best["model"] is None:
        raise FitError("validation loss was NaN in every epoch; lower the learning rate")
    return FitResult(
        config=cfg,
        history=history,
        best_epoch=int(best["epoch"]),
        best_val_loss=float(best["val_loss"]),
        checkpoint=ckpt_path,
        model=model,
    )


def _better(record: dict[str, float], best: dict[str, Any], *, by_select: bool) -> bool:
    """Whether ``record``'s epoch beats ``best``: the higher selection score (ties: lower val loss), or the
    lower validation loss. NaN never wins."""
    if by_select:
        score, top = record.get("select", float("nan")), best.get("select", -float("inf"))
        if score > top:
            return True
        if score != top:
            return False
    return bool(record["val_loss"] < best["val_loss"])


def _cpu_state(model: Any) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _checkpoint(
    cfg: TrainConfig,
    info: dict[str, Any],
    epoch: int,
    model: Any,
    optimizer: Any,
    best: dict[str, Any],
    history: list[dict[str, float]],
) -> dict[str, Any]:
    from engines.export import framework_versions

    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": cfg.to_dict(),
        "model_config": asdict(model.cfg),  # the architecture's resolved config, for people reading it
        "epoch": epoch,
        "model": _cpu_state(model),
        "optimizer": optimizer.state_dict(),
        "best": best,
        "history": history,
        "dataset": info,
        "versions": framework_versions(),
    }


def _check_resumable(ckpt: dict[str, Any], cfg: TrainConfig, info: dict[str, Any], path: Path) -> None:
    theirs = ckpt["dataset"]["fingerprint"]
    if theirs != info["fingerprint"]:
        raise FitError(
            f"{path} was trained on another dataset (fingerprint {theirs[:12]}..., from {ckpt['dataset']['path']}); "
            f"{info['path']} has fingerprint {info['fingerprint'][:12]}...; resume with that store, "
            "or start afresh in another --out"
        )
    # through TrainConfig, so fields added since the checkpoint was written take their defaults
    old = {k: v for k, v in TrainConfig.from_dict(ckpt["config"]).to_dict().items() if k != "epochs"}
    new = {k: v for k, v in cfg.to_dict().items() if k != "epochs"}
    diff = [f"{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}" for k in new if old.get(k) != new[k]]
    if diff:
        raise FitError(
            f"{path} was trained with another config ({'; '.join(diff)}); only --epochs may change on resume"
        )
    if len(ckpt["history"]) >= cfg.epochs:
        logger.info("%s already has %d epochs (asked for %d): nothing to train", path, len(ckpt["history"]), cfg.epochs)
