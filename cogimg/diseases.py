"""Disease presets: what a disease means to the data layer and the tasks.

A preset is data, not code: which image modalities a model reads, which label map it
learns, which classes exist, which metric ranks models, and the default preprocessing.
Tasks and datamodules are disease-agnostic and read everything disease-specific from here.

Modality keys are the names the BIDS loader gives images (``cogimg.data.bids``): the file
suffix (``T1w``, ``FLAIR``, ``T2starw``, ``dwi``, ``adc``), or ``pet_<tracer>`` for PET
files with a ``trc-<tracer>`` entity (``pet_amyloid``, ``pet_dat``). Label keys are
``<pipeline>_<suffix>`` for ``derivatives/<pipeline>/…_msk|_dseg.nii.gz`` and the bare
suffix when the file sits directly under ``derivatives/sub-*`` (the ISLES'22 layout).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Every diagnosis label the data layer accepts in ``participants.tsv`` (case-insensitive on
#: input, normalised to this spelling). "CN" is the healthy control of every disease.
DIAGNOSES: tuple[str, ...] = ("CN", "MCI", "AD", "PD", "stroke")


@dataclass(frozen=True)
class DiseasePreset:
    """Everything disease-specific that a datamodule or task needs.

    Attributes:
        name: preset name (``stroke``, ``ad``, ``ad_binary``, ``pd``, ``stroke_binary``, ``multi``).
        task: ``segmentation``, ``detection`` or ``classification``.
        modalities: image modalities every subject must have (model input channels, in order).
        optional_modalities: modalities used when present (e.g. a PET-like channel for fusion).
        label_keys: candidate label maps for dense tasks; the first one a dataset has wins.
        classes: class names in index order (segmentation: background first).
        diagnoses: diagnoses of the subjects the preset uses (classification: equals classes).
        tabular: clinical columns of ``participants.tsv`` usable as tabular input.
        primary_metric: the metric that ranks models on leaderboards and sweeps.
        spacing_mm: isotropic target spacing of the preprocessing, in mm.
        clip_percentiles: foreground intensity percentiles the preprocessing clips to
            (:func:`~cogimg.data.transforms.preprocessing`); ``None`` = no clipping.
    """

    name: str
    task: str
    modalities: tuple[str, ...]
    classes: tuple[str, ...]
    diagnoses: tuple[str, ...]
    primary_metric: str
    optional_modalities: tuple[str, ...] = ()
    label_keys: tuple[str, ...] = ()
    tabular: tuple[str, ...] = ()
    spacing_mm: float = 2.0
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)
    metric_mode: str = "max"
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


PRESETS: dict[str, DiseasePreset] = {
    "stroke": DiseasePreset(
        name="stroke",
        task="segmentation",
        modalities=("dwi", "adc"),
        optional_modalities=("FLAIR",),
        label_keys=("lesions_msk", "msk"),
        classes=("background", "lesion"),
        diagnoses=("stroke",),
        tabular=("age", "sex", "NIHSS"),
        primary_metric="dice",
    ),
    "microbleeds": DiseasePreset(
        name="microbleeds",
        task="detection",
        modalities=("T2starw",),
        label_keys=("microbleeds_msk",),
        classes=("background", "microbleed"),
        diagnoses=DIAGNOSES,
        primary_metric="cpm",
        # Microbleeds are the darkest voxels of a T2* image: a low percentile clip would
        # give them the value of the darkest ordinary tissue (or, on a head without air
        # around it, of half the image), erasing what a detector has to see.
        clip_percentiles=None,
    ),
    "ad": DiseasePreset(
        name="ad",
        task="classification",
        modalities=("T1w",),
        optional_modalities=("pet_amyloid",),
        classes=("CN", "MCI", "AD"),
        diagnoses=("CN", "MCI", "AD"),
        tabular=("age", "sex", "MMSE", "APOE4"),
        primary_metric="balanced_accuracy",
    ),
    "ad_binary": DiseasePreset(
        name="ad_binary",
        task="classification",
        modalities=("T1w",),
        optional_modalities=("pet_amyloid",),
        classes=("CN", "AD"),
        diagnoses=("CN", "AD"),
        tabular=("age", "sex", "MMSE", "APOE4"),
        primary_metric="balanced_accuracy",
    ),
    "pd": DiseasePreset(
        name="pd",
        task="classification",
        modalities=("T1w",),
        optional_modalities=("pet_dat",),
        classes=("CN", "PD"),
        diagnoses=("CN", "PD"),
        tabular=("age", "sex", "UPDRS"),
        primary_metric="balanced_accuracy",
    ),
    "stroke_binary": DiseasePreset(
        name="stroke_binary",
        task="classification",
        modalities=("dwi", "adc"),
        classes=("CN", "stroke"),
        diagnoses=("CN", "stroke"),
        tabular=("age", "sex"),
        primary_metric="balanced_accuracy",
    ),
    "multi": DiseasePreset(
        name="multi",
        task="classification",
        modalities=("T1w",),
        optional_modalities=("FLAIR",),
        classes=("CN", "AD", "PD", "stroke"),
        diagnoses=("CN", "AD", "PD", "stroke"),
        tabular=("age", "sex"),
        primary_metric="balanced_accuracy",
    ),
}


def get_preset(name: str) -> DiseasePreset:
    """Return the preset called ``name``; unknown names raise ``KeyError`` listing the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown disease preset {name!r}; available: {sorted(PRESETS)}") from None


def normalise_diagnosis(label: str) -> str:
    """Map a diagnosis string to its canonical spelling in :data:`DIAGNOSES`.

    Raises:
        ValueError: if the label is not a known diagnosis.
    """
    lookup = {d.lower(): d for d in DIAGNOSES}
    key = str(label).strip().lower()
    if key not in lookup:
        raise ValueError(f"unknown diagnosis {label!r}; expected one of {list(DIAGNOSES)}")
    return lookup[key]
