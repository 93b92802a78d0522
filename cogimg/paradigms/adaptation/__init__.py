"""Domain adaptation across scanner sites: harmonisation, adversarial/alignment training,
test-time adaptation.

- **Image harmonisation**: TorchIO histogram standardisation is a datamodule option
  (``histogram_standardization: true``); its landmarks are fitted on the *training* subset
  only, so with a leave-site-out split (:func:`cogimg.data.splits.make_leave_site_out_split`)
  they come from the training sites alone. Intensity z-scoring in the brain mask is per image.
- **Feature harmonisation**: :class:`ComBat` (empirical-Bayes ComBat) for tabular/regional
  features, fitted on training sites.
- **Training-time adaptation** (a training add-on of any task: ``addons: [{class_path:
  cogimg.paradigms.adaptation.DomainAdaptation, init_args: {method: dann}}]``):
  :class:`DomainAdaptation` — ``dann`` (gradient reversal + site classifier), ``coral``,
  ``mmd``; unlabelled target-site batches from
  :class:`~cogimg.paradigms.adaptation.datamodule.TargetSiteVolumeDataModule` (volumes) or
  :class:`~cogimg.paradigms.adaptation.datamodule.TargetSitePatchDataModule` (patches).
- **Test-time adaptation**: :func:`adapt_batchnorm` (AdaBN) and :func:`tent` (TENT).
"""

from cogimg.paradigms.adaptation.combat import ComBat
from cogimg.paradigms.adaptation.domain import (
    METHODS,
    AdaptationConfig,
    DomainAdaptation,
    subject_sites,
)
from cogimg.paradigms.adaptation.grl import GradientReversal, dann_coefficient, reverse_gradient
from cogimg.paradigms.adaptation.losses import coral_loss, domain_alignment, mmd_loss
from cogimg.paradigms.adaptation.test_time import (
    adapt_batchnorm,
    batchnorm_layers,
    softmax_entropy,
    tent,
)

__all__ = ["METHODS", "AdaptationConfig", "ComBat", "DomainAdaptation", "GradientReversal",
           "adapt_batchnorm", "batchnorm_layers", "coral_loss", "dann_coefficient",
           "domain_alignment", "mmd_loss", "reverse_gradient", "softmax_entropy",
           "subject_sites", "tent"]
