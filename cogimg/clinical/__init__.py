"""Clinical workflow: several checkpoints on each patient, one report per patient.

- :mod:`.models`: load segmentation / detection / classification checkpoints and run each
  on a case (calibrated probabilities, out-of-distribution check).
- :mod:`.pipeline`: per-case folders, the batch summary and the exit codes.
- :mod:`.report`: the one-page self-contained HTML report; :mod:`.figures` its PNGs.

Inputs (NIfTI, DICOM series, case folders, BIDS) are read by :mod:`cogimg.data.inputs`.
"""
