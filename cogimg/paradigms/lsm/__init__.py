"""Lesion–symptom mapping: voxel-wise mass-univariate statistics of a behavioural score
against lesion presence, with permutation family-wise error control.

- :mod:`.stats` — lesion matrix with a minimum-lesion-count mask, GLM t maps (pooled-variance
  t-test, or regression with covariates such as lesion volume) with max-t permutation FWE
  (Freedman–Lane) by nilearn's ``permuted_ols``, and the Brunner–Munzel rank statistic with
  its own max-statistic permutation FWE;
- :mod:`.synthetic` — scores generated from known regions, to check that a map recovers them;
- :mod:`.maps` — NIfTI statistic maps and a nilearn figure.
"""
