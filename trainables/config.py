"""The typed, documented config of one fine-tune-then-explore trial.

`TrialConfig.from_dict(d)` validates a (possibly nested) dict as Ray Tune
passes it: unknown keys and bad values raise `ConfigError` naming the field,
the value and what is allowed, before any data is read or any step is taken.

Units are in the field names where they matter: `*_epochs` are epochs over
the target training set (fractions allowed for cycles), learning rates are
plain SGD step sizes, `*_images` are image counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator

from trainables.errors import ConfigError
from trainables.methods import BY_NAME, METHODS, STAR_SSE, is_cyclic, plan_snapshots, pretrained_needed
from trainables.training_config import FineTuneConfig, ModelConfig, _Strict
from trainables.validation import format_validation_error

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "gaussian_blur",
    "contrast",
    "brightness",
    "pixelate",
    "jpeg",
)


class OODConfig(_Strict):
    """The corruption suite applied to the test set (CIFAR-C style)."""

    corruptions: list[Literal[CORRUPTIONS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(CORRUPTIONS),
        description="Corruptions to apply; [] disables OOD evaluation.",
    )
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="Subset of 1..5.")
    max_images: int = Field(
        100,
        gt=0,
        description="Test images per (corruption, severity), a fixed subset (CPU-sized; raise it on GPUs).",
    )

    @model_validator(mode="after")
    def _check_severities(self) -> OODConfig:
        bad = [s for s in self.severities if s not in (1, 2, 3, 4, 5)]
        if bad:
            raise ValueError(f"severities must be in 1..5, got {bad}")
        return self


class DataConfig(_Strict):
    """Where the target task comes from and how it is split and augmented.

    The embedded default task was chosen on the validation split
    (experiments/TASK_CHOICE.md, issue 14's "W16e5"): fine-tune on dress, coat,
    shirt, bag with 250 images after pre-training on all 10 classes with every
    training image outside the target's train and validation split (58,750
    images, 5 epochs, small_cnn width 16; fine-tune lr 0.01 for 40 epochs).
    Fine-tuning beats training from scratch by 8.8 points at 40 target epochs,
    8.0 at 80 and 5.1 at 200 (val, 3 seeds): a benefit the small target set
    cannot rebuild. The issue-7 task (pre-training on the 6 other classes only)
    gave +3.1 at 40 epochs, shrinking with longer training; it stays available
    as `source_images: source_classes`.
    """

    dataset: Literal["fashion_mnist_transfer", "cifar10", "cifar100", "imagefolder"] = (
        "fashion_mnist_transfer"
    )
    data_dir: str = Field(
        "/usr/share/datasets/fashion-mnist",
        description="Directory with the dataset files (idx .gz files, CIFAR batches, "
        "or an ImageFolder root with train/ and test/ (or val/)).",
    )
    download: bool = Field(
        False, description="Let torchvision download CIFAR into data_dir when its files are missing."
    )
    source_images: Literal["source_classes", "outside_target_split"] = Field(
        "outside_target_split",
        description="Embedded task only: what the checkpoints are pre-trained on. source_classes: "
        "the training-file images of source_classes (disjoint from the target classes); "
        "outside_target_split: all 10 classes, every training-file image except the target's "
        "train and validation images (supervised in-domain pre-training, as supervised ImageNet "
        "pre-training for CIFAR). pretrained.train_size caps either set.",
    )
    source_classes: list[int] | None = Field(
        None,
        description="Embedded task, source_images: source_classes only: classes used for "
        "pre-training; None = every class not in target_classes.",
    )
    target_classes: list[int] = Field(
        default_factory=lambda: [3, 4, 6, 8],
        description="Embedded task only: classes of the fine-tuning (target) task.",
    )
    train_size: int | None = Field(
        250, gt=0, description="Target training images (after the validation hold-out); None = all."
    )
    val_size: int = Field(1000, ge=0, description="Held out from target training data.")
    test_size: int | None = Field(None, gt=0, description="Cap on test images; None = all.")
    split_seed: int = Field(42, description="Seed of the train/validation split.")
    image_size: int | None = Field(
        None, gt=0, description="Stored image side (ImageFolder decode size); None = native."
    )
    input_size: int | None = Field(
        None, gt=0, description="Side fed to the model (e.g. 224 for ResNet-50); None = stored."
    )
    normalize: Literal["dataset", "imagenet"] = Field(
        "dataset", description="Input mean/std: the dataset's, or ImageNet's (what torchvision's weights "
        "and the official Swin code's checkpoints expect).")
    augment: Literal["crop_flip", "resized_crop_flip", "none"] = Field(
        "crop_flip",
        description="crop_flip: padded random crop + flip (+ resize to input_size); resized_crop_flip: "
        "RandomResizedCrop to input_size + flip, test Resize(256/224)+CenterCrop (ResNet-50 protocol).",
    )
    crop_padding: int = Field(2, ge=0, description="Pixels of padding for random crops.")
    ood: OODConfig = Field(default_factory=OODConfig)

    @model_validator(mode="after")
    def _check_classes(self) -> DataConfig:
        if self.dataset == "fashion_mnist_transfer":
            bad = [c for c in (self.source_classes or []) + self.target_classes if not 0 <= c <= 9]
            if bad:
                raise ValueError(f"Fashion-MNIST classes are 0..9, got {bad}")
            if len(self.target_classes) < 2:
                raise ValueError("target_classes needs at least 2 classes")
            if self.source_images == "outside_target_split" and self.source_classes is not None:
                raise ValueError(
                    f"source_classes={self.source_classes} is not used with source_images: "
                    "outside_target_split (pre-training sees all 10 classes); remove source_classes "
                    "or set source_images: source_classes"
                )
            overlap = sorted(set(self.pretrain_classes) & set(self.target_classes))
            if self.source_images == "source_classes" and overlap:
                raise ValueError(f"source_classes and target_classes overlap on {overlap}")
            if not self.pretrain_classes:
                raise ValueError("no source classes left: target_classes uses all 10 classes")
        return self

    @property
    def pretrain_classes(self) -> list[int]:
        """Embedded task: the classes (and labels 0..n-1, in this order) pre-training sees."""
        if self.source_images == "outside_target_split":
            return list(range(10))
        if self.source_classes is not None:
            return list(self.source_classes)
        return [c for c in range(10) if c not in self.target_classes]


class PretrainedConfig(_Strict):
    """Where the pre-trained checkpoints come from.

    - `embedded`: pre-train `num_checkpoints` models on the source images of
      the embedded task (`data.source_images`; seeds 0..K-1), cached in the
      sweep's storage under a content key.
    - `files`: one path per pre-trained checkpoint (torchvision state_dict,
      `{'state_dict': ...}` with `module.` prefixes, or `{'model_state': ...}`).
    - `torchvision`: a torchvision weights name such as `IMAGENET1K_V2`.
    - `scratch`: random initialisation (seed i for "checkpoint" i): the
      no-transfer control that shows what pre-training is worth.
    """

    source: Literal["embedded", "files", "torchvision", "scratch"] = Field(
        "embedded", description="embedded, files, torchvision or scratch (see above)."
    )
    num_checkpoints: int = Field(3, gt=0, description="embedded: how many to pre-train.")
    epochs: float = Field(5.0, gt=0, description="embedded: pre-training epochs.")
    lr: float = Field(0.05, gt=0, description="embedded: pre-training peak lr.")
    batch_size: int = Field(128, gt=0, description="embedded: pre-training batch size.")
    train_size: int | None = Field(
        None,
        gt=0,
        description="embedded: pre-training images, a class-stratified subset of data.source_images "
        "(seeded by data.split_seed); None = all of them.",
    )
    paths: list[str] = Field(default_factory=list, description="files: checkpoint paths.")
    weights: str | None = Field(None, description="torchvision: weights enum name.")
    cache_dir: str | None = Field(
        None,
        description="Where embedded checkpoints are stored; None = $STARSWEEP_CACHE or ~/.cache/starsweep.",
    )

    @model_validator(mode="after")
    def _check_source(self) -> PretrainedConfig:
        if self.source == "files" and not self.paths:
            raise ValueError("source 'files' needs at least one entry in paths")
        if self.source == "torchvision" and not self.weights:
            raise ValueError("source 'torchvision' needs weights, e.g. IMAGENET1K_V2")
        return self

    @property
    def count(self) -> int:
        """How many distinct pre-trained checkpoints exist."""
        if self.source in ("embedded", "scratch"):
            return self.num_checkpoints
        if self.source == "files":
            return len(self.paths)
        return 1


class EvalConfig(_Strict):
    batch_size: int | None = Field(
        None,
        gt=0,
        description="Inference batch size; None = the device's best (CPU 64, or 256 in bf16; CUDA 1024).",
    )
    precision: Literal["auto", "float32", "bf16"] = Field(
        "auto",
        description="Inference precision; auto = bf16 autocast where the hardware has it natively "
        "(CUDA, AVX512-BF16/AMX CPUs), else float32.",
    )
    bn_update_images: int = Field(
        1024, gt=0, description="Training images used to re-estimate soup BatchNorm statistics."
    )


@dataclass(frozen=True)
class CycleSettings:
    """A cyclic method's cycle: peak lr and length, absolute and as fine-tune ratios."""

    lr_max: float
    lr_max_ratio: float
    epochs: float
    epochs_ratio: float


class TrialBase(_Strict):
    """What every trial of a sweep shares: the trial config without the fields a sweep
    sets per trial (method, cycle hyperparameters, seed, pre-trained checkpoint index).
    A sweep spec's `trial:` block is one; `TrialConfig` extends it."""

    num_cycles: int = Field(4, gt=0, description="Cyclic methods: cycles after the fine-tune.")
    cycle_warmup_epochs: float = Field(
        0.0, ge=0, description="sse/star_sse/swa: linear warm-up at the start of every cycle, per "
        "iteration, up to lr_max (the official code's fge_warmup_epochs); shorter than a cycle.")
    reset_optimizer_state: bool = Field(
        True, description="Cyclic methods: a fresh optimizer at every cycle (the paper's runs); false: "
        "each cycle continues the optimizer state (momentum, AdamW's moments) of the phase it starts from.")
    lr_min_ratio: float = Field(
        0.01, gt=0, lt=1,
        description="fge/star_fge: the triangle's lowest lr / lr_max (the official code's 0.01).")
    num_members: int = Field(5, gt=0, description="local_de/global_de: ensemble size.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrained: PretrainedConfig = Field(default_factory=PretrainedConfig)
    finetune: FineTuneConfig = Field(default_factory=FineTuneConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = CUDA (bf16, channels_last) when a GPU is allocated, else CPU."
    )
    cache_dir: str | None = Field(
        None, description="Shared fine-tune cache (the sweep's storage); None = no sharing."
    )
    divergence_loss: float = Field(
        1e4, gt=0, description="A training loss above this (or NaN/inf) marks the trial diverged."
    )
    parallel_cycles: Literal["auto", "off"] | int = Field(
        "off",
        description="star_sse/star_fge only (cycles that all start from the fine-tune): cycles trained "
        "at the same time, each in its own placement-group "
        "bundle (the trial's resources once more per cycle); off = one after the other in the trial; "
        "N = N at a time (the sweep fails before training if the cluster cannot hold 1 + N bundles); "
        "auto = as many as the cluster holds, up to num_cycles, else one after the other. "
        "Results are the same either way.",
    )

    @field_validator("parallel_cycles", mode="before")
    @classmethod
    def _check_parallel_cycles(cls, value: Any) -> Any:
        if value in ("auto", "off"):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError("must be 'auto', 'off' or a whole number of cycles >= 1")

    @model_validator(mode="after")
    def _check_parallel_cycles_fit(self) -> Self:
        if isinstance(self.parallel_cycles, int) and self.parallel_cycles > self.num_cycles:
            raise ValueError(
                f"parallel_cycles={self.parallel_cycles} but num_cycles={self.num_cycles}: at most "
                f"{self.num_cycles} cycles can run at once (lower parallel_cycles, or use auto)"
            )
        return self

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Self:
        """Validate a plain dict; raise ConfigError naming field, value and fix."""
        try:
            return cls.model_validate(raw or {})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, cls)) from None


class TrialConfig(TrialBase):
    """One fine-tune-then-explore job; every field is documented in the README."""

    method: Literal[METHODS] = Field(  # type: ignore[valid-type]
        STAR_SSE, description=f"{', '.join(METHODS[:-1])} or {METHODS[-1]} (trainables/methods.py)."
    )
    lr_max: float | None = Field(None, gt=0, description="Cycle peak lr (absolute).")
    lr_max_ratio: float | None = Field(None, gt=0, description="Cycle peak lr / finetune.lr.")
    cycle_epochs: float | None = Field(None, gt=0, description="Epochs per cycle (absolute).")
    cycle_epochs_ratio: float | None = Field(None, gt=0, description="Epochs per cycle / finetune.epochs.")
    seed: int = Field(0, ge=0, description="Fine-tune seed (head init, data order, augmentation).")
    pretrained_index: int = Field(0, ge=0, description="Which pre-trained checkpoint to use.")
    ledger_dir: str | None = Field(
        None, description="Where the trial keeps its ledger (records, snapshot weights, resumable "
        "state, log) in `<ledger_dir>/<trial key>/`, a path or URI; a rerun continues from it. The "
        "sweep sets `<sweep>/ledgers/<phase>`; None = nothing kept."
    )

    @model_validator(mode="after")
    def _check_method(self) -> TrialConfig:
        if is_cyclic(self.method):
            self._check_cycle_warmup()
            for name in ("lr_max", "cycle_epochs"):
                absolute, ratio = getattr(self, name), getattr(self, name + "_ratio")
                if (absolute is None) == (ratio is None):
                    raise ValueError(
                        f"method {self.method!r} needs exactly one of {name} or {name}_ratio "
                        f"(got {name}={absolute}, {name}_ratio={ratio})"
                    )
        n_ckpt = self.pretrained.count
        if BY_NAME[self.method].members_differ_in == "checkpoint" and pretrained_needed(self)[-1] >= n_ckpt:
            raise ValueError(
                f"{self.method} with num_members={self.num_members} and pretrained_index="
                f"{self.pretrained_index} needs checkpoints {self.pretrained_index}.."
                f"{pretrained_needed(self)[-1]}, but pretrained provides {n_ckpt}: add checkpoints, "
                "lower num_members or pretrained_index"
            )
        if self.pretrained_index >= n_ckpt:
            raise ValueError(
                f"pretrained_index={self.pretrained_index} but only {n_ckpt} pre-trained "
                f"checkpoint(s) exist (valid: 0..{n_ckpt - 1})"
            )
        return self

    def _check_cycle_warmup(self) -> None:
        if not self.cycle_warmup_epochs:
            return
        if BY_NAME[self.method].cycle_schedule == "triangular":
            raise ValueError(f"cycle_warmup_epochs={self.cycle_warmup_epochs} with method {self.method!r}: "
                             "FGE's triangle already rises from lr_min; set cycle_warmup_epochs: 0")
        epochs = self.cycle_epochs or (self.cycle_epochs_ratio or 0) * self.finetune.epochs
        if epochs and self.cycle_warmup_epochs >= epochs:
            raise ValueError(f"cycle_warmup_epochs={self.cycle_warmup_epochs} must be shorter than a cycle "
                             f"(cycle_epochs={epochs:g})")

    # Derived values ----------------------------------------------------------------
    @property
    def cycle(self) -> CycleSettings | None:
        """The cycle hyperparameters, absolute and as ratios of the fine-tune's lr and
        epochs, whichever way they were given (None for methods without cycles): the one
        place where ratios are resolved."""
        if not is_cyclic(self.method):
            return None
        values = []
        for name, unit in (("lr_max", self.finetune.lr), ("cycle_epochs", self.finetune.epochs)):
            absolute, ratio = getattr(self, name), getattr(self, name + "_ratio")
            values += [absolute, absolute / unit] if absolute is not None else [ratio * unit, ratio]
        return CycleSettings(*values)

    @property
    def max_parallel_cycles(self) -> int:
        """How many cycles this trial may train at the same time, besides the trial itself:
        0 (one after the other in the trial) unless its cycles are independent (StarSSE) and
        `parallel_cycles` asks for more; `auto` = every cycle (the sweep caps it to what fits)."""
        if not BY_NAME[self.method].cycles_independent or self.parallel_cycles == "off":
            return 0
        return self.num_cycles if self.parallel_cycles == "auto" else self.parallel_cycles

    @property
    def num_snapshots(self) -> int:
        return len(plan_snapshots(self))

    @classmethod
    def per_trial_fields(cls) -> tuple[str, ...]:
        """The fields a sweep sets for each trial (those `TrialBase` lacks)."""
        return tuple(name for name in cls.model_fields if name not in TrialBase.model_fields)
