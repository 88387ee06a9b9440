"""The parts of a trial config that say what is trained and how: the model
(`ModelConfig`: an architecture by name) and the training recipe (`FineTuneConfig`: the
optimizer, its schedule's warm-up, gradient clipping and mixup, shared by the fine-tune
and every cycle). `trainables.config` composes them into `TrialBase` and `TrialConfig`.

The defaults are the paper's ResNet-50 recipe (SGD, momentum 0.9, cosine without
warm-up); `specs/cifar100_swin_t.yaml` sets the Swin-Tiny one (AdamW, warm-up, clipping,
mixup).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainables.archs import SWIN, check_arch


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelConfig(_Strict):
    arch: str = Field(
        "small_cnn", description="small_cnn (embedded), resnet18_cifar, or any torchvision classifier by "
        "name: resnet50, swin_t, vit_b_16, convnext_tiny, ... (its head replaced for the target classes)."
    )
    width: int = Field(16, gt=0, description="small_cnn only: channels of the first conv.")
    embed_dim: int | None = Field(
        None, gt=0, description="Swin only: patch-embedding width (None = the architecture's: 96 for "
        "swin_t); smaller for toy runs.")
    drop_path: float | None = Field(
        None, ge=0, lt=1, description="Swin only: stochastic depth rate (None = torchvision's: 0.2 for "
        "swin_t; the official Swin-Tiny fine-tunes use 0.1).")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        return check_arch(arch)

    @model_validator(mode="after")
    def _swin_only(self) -> ModelConfig:
        for name in ("embed_dim", "drop_path"):
            if getattr(self, name) is not None and self.arch not in SWIN:
                raise ValueError(f"{name} applies to Swin models ({', '.join(SWIN)}) only, got arch "
                                 f"{self.arch!r}: remove {name}")
        heads = SWIN[self.arch][2][0] if self.arch in SWIN else 1
        if self.embed_dim is not None and self.embed_dim % heads:
            fit = heads * max(1, self.embed_dim // heads)
            raise ValueError(f"embed_dim={self.embed_dim} must be a multiple of {self.arch}'s {heads} "
                             f"attention heads in its first stage (e.g. {fit})")
        return self

    def arch_args(self) -> dict:
        """The keyword arguments of `trainables.models.build_model` besides channels and classes."""
        args = {"width": self.width}
        args.update({k: v for k in ("embed_dim", "drop_path") if (v := getattr(self, k)) is not None})
        return args


class FineTuneConfig(_Strict):
    """Fine-tuning from the pre-trained checkpoint (the reference protocol), and the
    optimizer every cycle uses too (fresh at every phase start)."""

    lr: float = Field(0.01, gt=0, description="Peak lr of the cosine fine-tune schedule.")
    epochs: float = Field(40.0, gt=0, description="Fine-tune epochs (cosine to 0, after warmup_epochs).")
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd", description="sgd (the paper's ResNet-50 runs) or adamw (its Swin-Tiny runs), for the "
        "fine-tune and the cycles.")
    weight_decay: float = Field(5e-4, ge=0, description="Weight decay (fine-tune and cycles).")
    decay_norm_and_bias: bool | None = Field(
        None, description="Whether biases, norm weights and Swin's position tables are decayed too; "
        "None = yes with sgd, no with adamw (the Swin recipe).")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd: momentum (reset at every phase start "
                            "unless reset_optimizer_state: false).")
    nesterov: bool = Field(False, description="sgd: Nesterov momentum.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adamw: (beta1, beta2), each in [0, 1).")
    eps: float = Field(1e-8, gt=0, description="adamw: epsilon.")
    warmup_epochs: float = Field(
        0.0, ge=0, description="Linear warm-up of the fine-tune, per iteration, before the cosine; "
        "shorter than epochs.")
    clip_grad_norm: float | None = Field(
        None, gt=0, description="Clip the gradients' global L2 norm to this (after unscaling); None = off.")
    mixup_alpha: float = Field(
        0.0, ge=0, description="Mixup's Beta(alpha, alpha) (fine-tune and cycles); 0 = off.")
    batch_size: int = Field(32, gt=0, description="Fine-tune and cycle batch size.")
    lr_step: Literal["epoch", "iteration"] = Field(
        "epoch", description="Step the cosine per epoch (as the reference code) or per iteration."
    )

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        bad = [b for b in betas if not 0 <= b < 1]
        if bad:
            raise ValueError("each beta must be in [0, 1)")
        return betas

    @model_validator(mode="after")
    def _check_recipe(self) -> FineTuneConfig:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be shorter than epochs={self.epochs}")
        return self
