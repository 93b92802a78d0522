"""Lesion–symptom mapping: voxel-wise mass-univariate statistics of a behavioural score
against lesion presence, with permutation family-wise error control.

- :mod:`.stats` — lesion matrix with a minimum-lesion-count mask, vectorised GLM t maps
  (pooled-variance t-test, or regression with covariates such as lesion volume), the
  Brunner–Munzel rank statistic, and max-statistic permutation FWE (Freedman–Lane);
- :mod:`.synthetic` — scores generated from known regions, to check that a map recovers them;
- :mod:`.maps` — NIfTI statistic maps and a nilearn figure.
"""
