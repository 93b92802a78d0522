"""Difficulty presets of the synthetic cohort: effect sizes against noise and site spread."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Difficulty:
    """Multipliers applied to the ``medium`` design values.

    Attributes:
        name: ``easy``, ``medium`` or ``hard``.
        effect: scales disease effect sizes (atrophy fractions, signal changes, DAT loss).
        noise: scales scanner noise.
        site: scales how different the scanners are (contrast, response curve, blur, bias).
        anatomy: scales the random deformation between subjects.
        lesion_level: the stroke/microbleed modules' own difficulty scale (0 easy … 1 hard).
    """

    name: str
    effect: float
    noise: float
    site: float
    anatomy: float
    lesion_level: float


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty("easy", effect=1.5, noise=0.5, site=0.5, anatomy=0.8, lesion_level=0.0),
    "medium": Difficulty("medium", effect=1.0, noise=1.0, site=1.0, anatomy=1.0, lesion_level=0.5),
    "hard": Difficulty("hard", effect=0.6, noise=1.6, site=1.5, anatomy=1.2, lesion_level=1.0),
}


def get_difficulty(name: str) -> Difficulty:
    """The preset called ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    try:
        return DIFFICULTIES[name]
    except KeyError:
        raise ValueError(f"unknown difficulty {name!r}; expected one of {sorted(DIFFICULTIES)}") from None
