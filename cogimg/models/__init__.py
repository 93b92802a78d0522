"""Model registry: every network is a name.

    >>> from cogimg import models
    >>> models.available("segmentation")
    ['attention_unet', 'dynunet', 'segresnet', 'swinunetr', 'unet', 'unet2d_timm', 'unetr']
    >>> net = models.get("unet", in_channels=2, out_channels=2, patch_size=(64, 64, 64))
    >>> models.profile(net, (1, 2, 64, 64, 64))["params"]
    4807345

Builders register themselves with ``@register(name, task=...)`` when their module is
imported below, so every registered name works from a config without further imports;
a module adding models (e.g. detection) is imported here too.
"""

# Importing these modules registers their builders.
from cogimg.models import (  # noqa: F401
    classification,
    connectome,
    detection,
    fusion,
    mil,
    segmentation,
    slicewise,
)
from cogimg.models.profiling import Profile, count_flops, count_parameters, profile
from cogimg.models.registry import TASKS, ModelSpec, available, get, register, spec
from cogimg.models.segmentation import deep_supervision_outputs
from cogimg.models.slicewise import SliceWiseUNet

__all__ = [
    "TASKS",
    "ModelSpec",
    "Profile",
    "SliceWiseUNet",
    "available",
    "count_flops",
    "count_parameters",
    "deep_supervision_outputs",
    "get",
    "profile",
    "register",
    "spec",
]
