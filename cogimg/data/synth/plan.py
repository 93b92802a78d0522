"""The cohort plan: who is in the cohort, at which site, with which latent disease state.

Planning is cheap and serial; everything random about a subject comes from its own
``SeedSequence`` child (``SeedSequence(seed).spawn``), so a subject is the same whether it
is generated serially or by any worker.

Site imbalance: with ``site_confound = c`` each diagnosis goes to its "home" site with
probability ``c + (1 − c)/K`` and to each other site with ``(1 − c)/K`` (home sites rotate
through the diagnoses), so ``c = 0`` balances sites and ``c = 1`` makes site and diagnosis
the same thing. Counts are exact (largest-remainder rounding), not sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cogimg.data.synth.atrophy import ADProfile, sample_ad_profile
from cogimg.data.synth.difficulty import Difficulty
from cogimg.data.synth.pd import PDProfile, sample_pd_profile
from cogimg.data.synth.sites import ScannerModel, make_sites

#: Which diagnoses each ``--diseases`` entry adds (CN controls are always present).
DISEASE_DIAGNOSES: dict[str, tuple[str, ...]] = {"ad": ("MCI", "AD"), "pd": ("PD",), "stroke": ("stroke",)}
DIAGNOSIS_ORDER = ("CN", "MCI", "AD", "PD", "stroke")
DEFAULT_PROPORTIONS: dict[str, float] = {"CN": 0.30, "MCI": 0.15, "AD": 0.15, "PD": 0.20, "stroke": 0.20}
#: Age (mean, SD, min, max) and P(male) by diagnosis (ADNI / PPMI / stroke-registry-like).
AGE = {"CN": (70.0, 8.0, 50, 90), "MCI": (73.0, 7.0, 55, 90), "AD": (75.0, 7.0, 55, 92),
       "PD": (66.0, 9.0, 40, 88), "stroke": (68.0, 12.0, 35, 95)}
P_MALE = {"CN": 0.45, "MCI": 0.55, "AD": 0.45, "PD": 0.62, "stroke": 0.58}
#: Streams spawned from each subject's SeedSequence, in order.
SUBJECT_STREAMS = ("clinical", "anatomy", "atrophy", "stroke", "microbleeds", "pd", "contrast", "scanner",
                   "bold")


@dataclass
class SubjectPlan:
    """One planned subject (picklable: sent to worker processes)."""

    index: int
    participant_id: str
    diagnosis: str
    site: int  # 0-based
    age: float
    sex: str
    ad: ADProfile
    pd: PDProfile
    seed: np.random.SeedSequence

    def rngs(self) -> dict[str, np.random.Generator]:
        """Independent generators per stage (same draws whatever else is enabled)."""
        return {name: np.random.default_rng(child_seed(self.seed, j + 1))
                for j, name in enumerate(SUBJECT_STREAMS)}  # child 0 drew the plan


def child_seed(seq: np.random.SeedSequence, j: int) -> np.random.SeedSequence:
    """The ``j``-th child of ``seq``, stateless (``SeedSequence.spawn`` counts its calls,
    so calling it twice — or after pickling — would give different children)."""
    return np.random.SeedSequence(entropy=seq.entropy, spawn_key=tuple(seq.spawn_key) + (j,))


@dataclass
class CohortPlan:
    subjects: list[SubjectPlan]
    sites: list[ScannerModel]
    diagnoses: tuple[str, ...]
    site_probabilities: dict[str, list[float]]


def parse_diseases(diseases) -> tuple[str, ...]:
    """Normalise ``"stroke,ad"`` or an iterable to a tuple of known disease names."""
    items = diseases.split(",") if isinstance(diseases, str) else list(diseases)
    items = [d.strip().lower() for d in items if d.strip()]
    unknown = [d for d in items if d not in DISEASE_DIAGNOSES]
    if unknown or not items:
        raise ValueError(f"--diseases: unknown or empty {unknown or items!r}; choose from {sorted(DISEASE_DIAGNOSES)}")
    return tuple(dict.fromkeys(items))


def cohort_diagnoses(diseases: tuple[str, ...]) -> tuple[str, ...]:
    wanted = {"CN"} | {dx for d in diseases for dx in DISEASE_DIAGNOSES[d]}
    return tuple(dx for dx in DIAGNOSIS_ORDER if dx in wanted)


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``weights``."""
    w = np.asarray(weights, float)
    raw = total * w / w.sum()
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def diagnosis_counts(n: int, diagnoses: tuple[str, ...], proportions: dict[str, float] | None) -> dict[str, int]:
    """Exact number of subjects per diagnosis; ``proportions`` override the default weights
    of the diagnoses they name (the others keep theirs)."""
    props = dict(DEFAULT_PROPORTIONS)
    if proportions:
        bad = sorted(set(proportions) - set(DIAGNOSIS_ORDER))
        if bad:
            raise ValueError(f"proportions: unknown diagnoses {bad}; expected some of {list(DIAGNOSIS_ORDER)}")
        if any(v < 0 for v in proportions.values()):
            raise ValueError(f"proportions must be ≥ 0, got {proportions}")
        props.update(proportions)
    weights = np.array([props[dx] for dx in diagnoses])
    if weights.sum() <= 0:
        raise ValueError(f"proportions give no weight to any of {list(diagnoses)}")
    return dict(zip(diagnoses, (int(c) for c in largest_remainder(n, weights))))


def site_probabilities(diagnoses: tuple[str, ...], n_sites: int, confound: float) -> dict[str, list[float]]:
    if not 0.0 <= confound <= 1.0:
        raise ValueError(f"site_confound must be in [0, 1], got {confound}")
    probs = {}
    for j, dx in enumerate(diagnoses):
        p = np.full(n_sites, (1.0 - confound) / n_sites)
        p[j % n_sites] += confound
        probs[dx] = [float(v) for v in p]
    return probs


def plan_cohort(
    n_subjects: int, seed: int, n_sites: int, diseases, difficulty: Difficulty,
    proportions: dict[str, float] | None = None, site_confound: float = 0.3,
) -> CohortPlan:
    """Plan a cohort (see the module docstring). Deterministic in all arguments."""
    if n_subjects < 1:
        raise ValueError(f"subjects must be ≥ 1, got {n_subjects}")
    if n_sites < 1:
        raise ValueError(f"sites must be ≥ 1, got {n_sites}")
    diagnoses = cohort_diagnoses(parse_diseases(diseases))
    root = np.random.SeedSequence(seed)
    plan_seq, site_seq, subjects_seq = (child_seed(root, j) for j in range(3))
    plan_rng = np.random.default_rng(plan_seq)
    sites = make_sites(np.random.default_rng(site_seq), n_sites, difficulty)

    counts = diagnosis_counts(n_subjects, diagnoses, proportions)
    probs = site_probabilities(diagnoses, n_sites, site_confound)
    slots = []
    for dx in diagnoses:
        per_site = largest_remainder(counts[dx], np.array(probs[dx]))
        for k, c in enumerate(per_site):
            slots += [(dx, k)] * int(c)
    order = plan_rng.permutation(len(slots))
    width = max(4, len(str(n_subjects)))
    subject_seeds = [child_seed(subjects_seq, i) for i in range(n_subjects)]
    subjects = []
    for i, slot in enumerate(order):
        dx, site = slots[slot]
        rng = np.random.default_rng(child_seed(subject_seeds[i], 0))
        mean, sd, lo, hi = AGE[dx]
        age = float(np.clip(round(rng.normal(mean, sd), 1), lo, hi))
        sex = "M" if rng.uniform() < P_MALE[dx] else "F"
        subjects.append(SubjectPlan(
            index=i, participant_id=f"sub-{i + 1:0{width}d}", diagnosis=dx, site=site, age=age,
            sex=sex, ad=sample_ad_profile(rng, dx, age), pd=sample_pd_profile(rng, dx, age),
            seed=subject_seeds[i],
        ))
    return CohortPlan(subjects, sites, diagnoses, probs)
