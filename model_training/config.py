"""The training configuration: typed dataclasses read from YAML.

One :class:`TrainConfig` per run, built at the entry point (``ecg-train run --config``)
and passed down as explicit values. Unknown keys are refused with the dotted path of the
key, so a typo (``pretrian:``) cannot silently fall back to a default. The resolved
configuration is written beside the checkpoints, so ``ecg-train evaluate --run OUT``
rebuilds exactly the models that were trained.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from model_training.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "demo.yaml"


@dataclass(frozen=True, slots=True)
class DataConfig:
    """Where the cohort is; if the dataset folder is empty, a hospital of this size is simulated first."""

    cohort_dir: str | None = None  # default: DATA/cohort
    simulate_patients: int = 4000
    simulate_seed: int = 0
    workers: int | None = None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    stem_width: int = 32
    widths: tuple[int, ...] = (32, 64, 96, 128)
    blocks_per_stage: int = 1
    kernel_size: int = 5
    embedding_dim: int = 128
    clinical_hidden: tuple[int, ...] = (128, 128, 128)
    clinical_dropout: float = 0.5
    joint_dim: int = 128  # pre-training projection space
    head_hidden: int = 0  # 0: linear heads
    head_dropout: float = 0.0


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """ECG augmentations of pre-training's training windows (never of validation, test or the labelled stages).

    Every one 0 means off, the default.
    """

    amplitude_scale: float = 0.0  # each lead's gain is exp(N(0, this)): 0.1 is about ±10 %
    baseline_wander_mv: float = 0.0  # peak of a slow sinusoid added per lead (0.1 to 1 cycle per window)
    noise_mv: float = 0.0  # standard deviation of added Gaussian noise
    lead_dropout: float = 0.0  # probability that a lead is zeroed, as the preprocessing fills a missing lead

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) > 0 for f in dataclasses.fields(self))


@dataclass(frozen=True, slots=True)
class PretrainConfig:
    """Stage 1: ECG crop ↔ clinical vector of the same study, no labels."""

    loss: str = "clip"  # clip | vicreg
    epochs: int = 30
    lr: float = 3e-3
    temperature_init: float = 0.07
    regression_weight: float = 0.0  # > 0: the ECG embedding also regresses the measured clinical features
    batch_size: int = 0  # 0: the run's batch_size; more: more negatives per step for the contrastive loss
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mask_ratio: float = 0.0  # > 0: this share of each study's measured features is hidden from the clinical encoder
    mask_weight: float = 1.0  # ... and reconstructed from its embedding, with this weight beside the contrastive loss


@dataclass(frozen=True, slots=True)
class LabsConfig:
    """Stage 2: lab-abnormality heads on the ECG embedding."""

    encoder: str = "frozen"  # frozen | finetune
    epochs: int = 10
    lr: float = 3e-3
    encoder_lr_scale: float = 0.3  # when fine-tuning: the pre-trained encoder moves more slowly than the new head


@dataclass(frozen=True, slots=True)
class DiagnosisConfig:
    """Stage 3: the diagnosis head; optionally fine-tunes the encoder with the lab loss as an auxiliary."""

    epochs: int = 20
    lr: float = 1e-3
    loss: str = "bce"  # bce | focal
    finetune_encoder: bool = True
    encoder_lr_scale: float = 0.3  # the pre-trained encoder moves more slowly than the new head
    lab_aux_weight: float = 0.5  # 0: no auxiliary lab loss


@dataclass(frozen=True, slots=True)
class BaselinesConfig:
    """ECG-only from scratch and late-fusion multimodal: same encoder, same split."""

    epochs: int = 40
    lr: float = 3e-3
    loss: str = "bce"


@dataclass(frozen=True, slots=True)
class EvaluationConfig:
    n_bootstrap: int = 1000
    seed: int = 0


@dataclass(frozen=True, slots=True)
class ReleaseConfig:
    """Which labels the exported model writes back to the chart; the rest are stored only.

    Decided per label on the validation fold (:mod:`model_training.release`, which argues the
    defaults): chart when the fold holds at least ``min_positives`` positives of the label, the lower
    bound of the AUROC's 95 % CI reaches ``min_auroc_ci_low`` and the PPV at the operating threshold
    reaches ``min_ppv``. Diagnosis codes starting with a prefix of ``never_charted`` are stored only, whatever
    their figures: by default ICD-10 chapters V (``F``, mental and behavioural) and XXI (``Z``, factors
    influencing health status), statements about behaviour or medication an ECG cannot support.
    """

    min_auroc_ci_low: float = 0.80
    min_ppv: float = 0.30
    min_positives: int = 10
    never_charted: tuple[str, ...] = ("F", "Z")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    labs: LabsConfig = field(default_factory=LabsConfig)
    diagnosis: DiagnosisConfig = field(default_factory=DiagnosisConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 128
    num_threads: int = 2
    loader_workers: int = 0  # DataLoader processes reading ECG windows from disk; 0 reads in the training process
    weight_decay: float = 1e-4
    label_fraction: float = 1.0  # share of training studies whose labels stages 2-3 and the baselines see
    progress: bool = True

    def __post_init__(self) -> None:
        _check_choice("pretrain.loss", self.pretrain.loss, ("clip", "vicreg"))
        _check_choice("labs.encoder", self.labs.encoder, ("frozen", "finetune"))
        _check_choice("diagnosis.loss", self.diagnosis.loss, ("bce", "focal"))
        _check_choice("baselines.loss", self.baselines.loss, ("bce", "focal"))
        if self.diagnosis.finetune_encoder and self.diagnosis.lab_aux_weight <= 0:
            raise ConfigError(
                "diagnosis: finetune_encoder needs lab_aux_weight > 0, or the lab heads no longer match the encoder"
            )
        if not 0.0 < self.label_fraction <= 1.0:
            raise ConfigError(f"label_fraction: must be in (0, 1], got {self.label_fraction}")
        for key in ("min_auroc_ci_low", "min_ppv"):
            value = getattr(self.release, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"release.{key}: must be in [0, 1], got {value}")
        if self.release.min_positives < 1:
            raise ConfigError(f"release.min_positives: must be at least 1, got {self.release.min_positives}")
        if self.loader_workers < 0:
            raise ConfigError(f"loader_workers: must be 0 or more, got {self.loader_workers}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size: must be at least 2 (batch statistics), got {self.batch_size}")
        _check_pretrain(self.pretrain)
        if self.pretrain.batch_size < 0 or self.pretrain.batch_size == 1:
            raise ConfigError(
                f"pretrain.batch_size: must be 0 (the run's) or at least 2, got {self.pretrain.batch_size}"
            )

    def to_dict(self) -> dict[str, object]:
        return _plain(dataclasses.asdict(self))


def with_defaults(stored: object, defaults: object) -> object:
    """``stored`` (a configuration dict, or part of one, recorded by an earlier run) with every key it lacks taken
    from ``defaults``: a setting added since was at its default there, since every new option defaults to the former
    behaviour. Lets older run folders be compared with the configuration of today."""
    if not (isinstance(stored, dict) and isinstance(defaults, dict)):
        return stored
    merged = dict(defaults)
    merged.update({key: with_defaults(value, defaults.get(key)) for key, value in stored.items()})
    return merged


def _check_pretrain(pretrain: PretrainConfig) -> None:
    augment = pretrain.augment
    for f in dataclasses.fields(augment):
        if getattr(augment, f.name) < 0:
            raise ConfigError(f"pretrain.augment.{f.name}: must be 0 (off) or more, got {getattr(augment, f.name)}")
    if augment.lead_dropout >= 1.0:
        raise ConfigError(f"pretrain.augment.lead_dropout: must be below 1, got {augment.lead_dropout}")
    if not 0.0 <= pretrain.mask_ratio < 1.0:
        raise ConfigError(f"pretrain.mask_ratio: must be in [0, 1), got {pretrain.mask_ratio}")
    if pretrain.mask_weight < 0:
        raise ConfigError(f"pretrain.mask_weight: must be 0 or more, got {pretrain.mask_weight}")


def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def load_config(path: Path, overrides: dict[str, object] | None = None) -> TrainConfig:
    """Read ``path`` (YAML); ``overrides`` maps dotted keys (``"device"``, ``"pretrain.loss"``) to values."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def config_from_dict(raw: dict[str, object]) -> TrainConfig:
    return _build(TrainConfig, raw, "")


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _set_dotted(raw: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def _build(cls: type, raw: object, prefix: str) -> object:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f" in {prefix.rstrip('.')}" if prefix else ""
        raise ConfigError(f"unknown key(s) {[prefix + k for k in unknown]}{where}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], value, prefix + name) for name, value in raw.items()}
    return cls(**values)


def _convert(hint: object, value: object, key: str) -> object:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")  # type: ignore[arg-type]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_convert(args[0], v, key) for v in value)
    return _scalar(hint, value, key)


def _scalar(hint: object, value: object, key: str) -> object:
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
