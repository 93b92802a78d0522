"""Low-label training: label fractions, semi-supervision, self-supervised pretraining and
automated annotation.

- **Label fractions** (:mod:`cogimg.data.label_fractions`, in the data layer because the
  datamodules read them): nested, stratified, seeded labelled subsets of a saved split's
  training folds (``label_fraction: 0.1`` on any datamodule); the rest of the fold is the
  unlabelled pool. Validation and test never change.
- **Semi-supervision** (:mod:`.semi_supervised`): the :class:`SemiSupervised` training add-on
  (``method: mean_teacher`` or ``pseudo_label``) on any task; pseudo-label
  files of each round go to a folder outside the dataset (:mod:`.pseudo_labels`).
- **Self-supervised pretraining** (:mod:`.pretrain`): masked-volume reconstruction on
  unlabelled patches → a weights file that the :class:`PretrainedWeights` add-on loads into a task.
- **Automated annotation** (:mod:`.annotate`, ``cogimg annotate``): pre-label masks, MC-dropout
  or ensemble uncertainty (:mod:`.uncertainty`) and a review list ranked by uncertainty;
  :mod:`.active` simulates labelling by uncertainty vs at random.
"""

from cogimg.data.label_fractions import (
    DEFAULT_FRACTIONS,
    check_label_fractions,
    label_fractions_path,
    labelled_subset,
    load_label_fractions,
    make_label_fractions,
    save_label_fractions,
)
from cogimg.paradigms.lowlabel.active import labels_gain, simulate_active_learning
from cogimg.paradigms.lowlabel.pretrain import (
    PretrainedWeights,
    PretrainedWeightsError,
    load_pretrained,
    pretrain_encoder,
)
from cogimg.paradigms.lowlabel.semi_supervised import (
    METHODS,
    SemiSupervised,
    SemiSupervisedConfig,
    consistency_loss,
    ema_update,
    pseudo_label_loss,
    sigmoid_rampup,
)
from cogimg.paradigms.lowlabel.uncertainty import (
    enable_mc_dropout,
    subject_uncertainty,
    uncertainty_maps,
)

__all__ = ["DEFAULT_FRACTIONS", "METHODS", "PretrainedWeights", "PretrainedWeightsError", "SemiSupervised",
           "SemiSupervisedConfig", "check_label_fractions", "consistency_loss", "ema_update",
           "enable_mc_dropout", "label_fractions_path", "labelled_subset", "labels_gain",
           "load_label_fractions", "load_pretrained", "make_label_fractions", "pretrain_encoder",
           "pseudo_label_loss", "save_label_fractions", "sigmoid_rampup", "simulate_active_learning",
           "subject_uncertainty", "uncertainty_maps"]
