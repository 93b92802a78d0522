"""3D lesion detectors: MONAI's RetinaNet on a small ResNet-FPN, and a CenterNet-style
heatmap detector on a MONAI U-Net.

Both share one small interface (:class:`Detector`) so that ``DetectionTask`` can train and
evaluate either:

- ``loss(images, targets) -> {name: scalar}`` on training patches ``(B, C, X, Y, Z)``, with
  ``targets`` one dict per patch: ``boxes`` ``(N, 6)`` float ``[x0, y0, z0, x1, y1, z1]`` in
  voxels (MONAI ``StandardMode``; voxel ``i`` spans ``[i, i + 1)``, the convention of
  :mod:`cogimg.data.boxes`) and ``labels`` ``(N,)`` int64 foreground class index ``0..K-1``.
- ``detect(images, ...) -> [{"boxes", "scores", "labels"}]`` on whole volumes by Gaussian
  sliding windows: the dense network outputs are stitched over the volume first and boxes
  decoded once from the stitched maps, so a lesion cut by a window border is not reported
  twice; a 3D NMS (``monai.data.box_utils``) removes what overlaps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cogimg.models.registry import register


class Detector(nn.Module):
    """Interface of cogimg's detectors (see the module docstring)."""

    num_classes: int
    #: Patch sizes must be multiples of this (the network's coarsest stride).
    size_divisible: int = 1

    def loss(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def detect(self, images: torch.Tensor, roi_size: Sequence[int], overlap: float = 0.25,
               sw_batch_size: int = 2, score_threshold: float = 0.05, nms_iou: float = 0.1,
               max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
        raise NotImplementedError


# --------------------------------------------------------------------------- RetinaNet
class RetinaNet3D(Detector):
    """MONAI ``RetinaNetDetector`` (ATSS matching, hard-negative sampling, focal-free BCE as
    in MONAI's LUNA16 recipe) around a ``RetinaNet`` on a ResNet-FPN backbone.

    The backbone's stem has stride 2 and no max-pool, so the FPN levels (ResNet layers 1 and
    2 plus an extra max-pooled level) have strides 2, 4 and 8 voxels. ``anchor_mm``-free:
    anchors are cubes of ``anchor_voxels`` at the finest level, doubled at each coarser one.

    Known limit: objects of a single voxel are not learned. On noise patches with bright
    cubes, cubes of a few voxels are found (the test suite checks 3-voxel cubes on 16³
    patches), but with 1-voxel cubes the classifier collapses to one score everywhere (also
    with smaller anchors, with unmatched anchors that overlap a box ignored, without the
    box-regression loss and at a lower learning rate). Many microbleeds at 2 mm are a single
    voxel, so there the full-resolution ``centernet_3d`` is the detector to use
    (``studies/detection_froc.yaml`` compares them).
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int],
                 layers: Sequence[int], fpn_channels: int, anchor_voxels: Sequence[float]) -> None:
        super().__init__()
        from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
        from monai.apps.detection.networks.retinanet_network import RetinaNet
        from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
        from monai.networks.blocks.backbone_fpn_utils import BackboneWithFPN, LastLevelMaxPool
        from monai.networks.nets.resnet import ResNet

        if len(widths) != 2 or len(layers) != 2:
            raise ValueError(f"retinanet_3d: widths and layers need 2 entries (ResNet stages 1 "
                             f"and 2 feed the FPN), got {list(widths)} and {list(layers)}")
        self.num_classes = num_classes
        self.size_divisible = 8
        # MONAI's ResNet always builds 4 stages; stages 3-4 are dropped by the FPN's layer
        # getter, so they are made minimal here.
        backbone = ResNet(block="basic", layers=[*layers, 1, 1], block_inplanes=[*widths, 8, 8],
                          spatial_dims=3, n_input_channels=in_channels, conv1_t_size=3,
                          conv1_t_stride=2, no_max_pool=True)
        # ``no_max_pool`` is read only by ResNet.forward; the FPN's IntermediateLayerGetter
        # runs the children in order and would still max-pool (strides 4/8/16: an anchor
        # grid 4 voxels apart for 1-5 voxel microbleeds).
        backbone.maxpool = nn.Identity()
        # MONAI's resnet_fpn_feature_extractor fixes 256 FPN channels (18 M parameters with
        # the heads); a small width keeps the detector CPU-sized.
        features = BackboneWithFPN(backbone, return_layers={"layer1": "0", "layer2": "1"},
                                   in_channels_list=list(widths), out_channels=fpn_channels,
                                   spatial_dims=3, extra_blocks=LastLevelMaxPool(3))
        shapes = tuple((float(a),) * 3 for a in anchor_voxels)
        anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=(1, 2, 4), base_anchor_shapes=shapes)
        network = RetinaNet(spatial_dims=3, num_classes=num_classes, num_anchors=len(shapes),
                            feature_extractor=features, size_divisible=self.size_divisible)
        self.detector = RetinaNetDetector(network, anchors)
        self.detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
        self.detector.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3,
                                                pool_size=20, min_neg=16)

    def forward(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Dense head outputs per FPN level: ``classification`` ``(B, A·K, x, y, z)`` logits and
        ``box_regression`` ``(B, A·6, x, y, z)`` (A anchors per location)."""
        return self.detector.network(images)

    def loss(self, images, targets):
        # MONAI's detector returns losses in training mode and boxes in eval mode.
        with _mode(self.detector, training=True):
            losses = self.detector(images, targets)
        return {"classification": losses["classification"], "box_regression": losses["box_regression"]}

    def detect(self, images, roi_size, overlap=0.25, sw_batch_size=2, score_threshold=0.05,
               nms_iou=0.1, max_detections=100):
        self.detector.set_box_selector_parameters(score_thresh=score_threshold, nms_thresh=nms_iou,
                                                  topk_candidates_per_level=1000,
                                                  detections_per_img=max_detections)
        self.detector.set_sliding_window_inferer(tuple(int(r) for r in roi_size), sw_batch_size,
                                                 overlap, mode="gaussian")
        with torch.inference_mode(), _mode(self.detector, training=False):
            results = self.detector(images, use_inferer=True)
        return [{"boxes": r["boxes"].float(), "scores": r["labels_scores"].float(),
                 "labels": r["labels"].long()} for r in results]


@contextlib.contextmanager
def _mode(module: nn.Module, training: bool):
    """Temporarily put ``module`` in training or eval mode."""
    previous = module.training
    module.train(training)
    try:
        yield
    finally:
        module.train(previous)


@register("retinanet_3d", task="detection")
def retinanet_3d(*, in_channels: int = 1, num_classes: int = 1, patch_size: Sequence[int] = (32, 32, 32),
                 widths: Sequence[int] = (16, 32), layers: Sequence[int] = (1, 1), fpn_channels: int = 32,
                 anchor_voxels: Sequence[float] = (3.0, 6.0)) -> RetinaNet3D:
    """3D RetinaNet (MONAI) on a small ResNet-FPN (strides 2/4/8), CPU-sized.

    ``num_classes`` counts foreground classes only; ``patch_size`` must be a multiple of 8.
    """
    if any(int(p) % 8 for p in patch_size):
        raise ValueError(f"retinanet_3d: patch_size {list(patch_size)} must be a multiple of 8")
    return RetinaNet3D(in_channels, num_classes, widths, layers, fpn_channels, anchor_voxels)


# --------------------------------------------------------------------------- CenterNet
class CenterNet3D(Detector):
    """CenterNet-style detector: per-class centre heatmaps and box extents from a U-Net.

    The U-Net outputs ``(B, K + 3, X, Y, Z)`` at full resolution: ``K`` heatmap logits and
    ``log`` box extents (voxels) along X, Y, Z. Training targets are Gaussian blobs at box
    centres (sigma = extent / 6 per axis, at least ``min_sigma`` voxels) with a 1 at the
    centre voxel; the loss is CenterNet's penalty-reduced focal loss (alpha 2, beta 4) plus
    an L1 loss on log extents at centre voxels. Detections are local maxima (3 × 3 × 3) of the
    stitched heatmap, their boxes clipped to the volume. Full resolution suits small, roughly spherical lesions.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: Sequence[int],
                 strides: Sequence[int], num_res_units: int, min_sigma: float = 0.7,
                 size_weight: float = 0.5, prior: float = 0.01) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.num_classes = num_classes
        self.min_sigma, self.size_weight = float(min_sigma), float(size_weight)
        self.size_divisible = int(torch.prod(torch.tensor([int(v) for v in strides])))
        self.unet = UNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes + 3,
                         channels=list(channels), strides=list(strides), num_res_units=num_res_units)
        # Start from a low foreground prior (CenterNet/RetinaNet): the focal loss of a
        # 0.5-everywhere heatmap on millions of background voxels would swamp the first steps.
        last = [m for m in self.unet.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))][-1]
        with torch.no_grad():
            last.bias[:num_classes] = -torch.log(torch.tensor((1 - prior) / prior))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, K + 3, X, Y, Z)``: heatmap logits, then log box extents (voxels)."""
        return self.unet(images)

    def heatmap_targets(self, shape: Sequence[int], targets: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gaussian heatmaps ``(B, K, X, Y, Z)``, centre mask ``(B, X, Y, Z)`` bool and target
        log extents ``(B, 3, X, Y, Z)`` (valid where the mask is set)."""
        batch, device = len(targets), targets[0]["boxes"].device if targets else "cpu"
        heat = torch.zeros((batch, self.num_classes, *shape), device=device)
        centres = torch.zeros((batch, *shape), dtype=torch.bool, device=device)
        log_size = torch.zeros((batch, 3, *shape), device=device)
        grids = [torch.arange(n, device=device, dtype=torch.float32) for n in shape]
        for b, target in enumerate(targets):
            for box, label in zip(target["boxes"].float(), target["labels"].long()):
                extent = (box[3:] - box[:3]).clamp(min=1.0)
                centre = (box[:3] + box[3:]) / 2 - 0.5  # voxel-index coordinates
                peak = [int(min(max(int(torch.floor(c + 0.5)), 0), n - 1)) for c, n in zip(centre, shape)]
                sigma = (extent / 6).clamp(min=self.min_sigma)
                g = [torch.exp(-((grid - c) ** 2) / (2 * s**2)) for grid, c, s in zip(grids, centre, sigma)]
                blob = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
                heat[b, label] = torch.maximum(heat[b, label], blob)
                heat[b, label, peak[0], peak[1], peak[2]] = 1.0
                centres[b, peak[0], peak[1], peak[2]] = True
                log_size[b, :, peak[0], peak[1], peak[2]] = torch.log(extent)
        return heat, centres, log_size

    def loss(self, images, targets):
        output = self(images)
        heat, centres, log_size = self.heatmap_targets(images.shape[2:], targets)
        logits = output[:, : self.num_classes].float()
        prob = torch.sigmoid(logits)
        positive = heat.eq(1.0)
        # log σ(x) and log(1 - σ(x)) from logits: stable where probabilities saturate.
        pos_loss = F.logsigmoid(logits) * (1 - prob) ** 2 * positive
        neg_loss = F.logsigmoid(-logits) * prob**2 * (1 - heat) ** 4 * ~positive
        n_pos = positive.sum().clamp(min=1)
        focal = -(pos_loss.sum() + neg_loss.sum()) / n_pos
        if centres.any():
            predicted = output[:, self.num_classes:].permute(0, 2, 3, 4, 1)[centres]
            size = F.l1_loss(predicted, log_size.permute(0, 2, 3, 4, 1)[centres])
        else:
            size = output.sum() * 0.0  # keeps every parameter in the graph
        return {"heatmap": focal, "size": self.size_weight * size}

    def detect(self, images, roi_size, overlap=0.25, sw_batch_size=2, score_threshold=0.05,
               nms_iou=0.1, max_detections=100):
        from monai.data.box_utils import clip_boxes_to_image, non_max_suppression
        from monai.inferers import sliding_window_inference

        with torch.inference_mode():
            maps = sliding_window_inference(images, tuple(int(r) for r in roi_size), sw_batch_size,
                                            self, overlap=overlap, mode="gaussian")
            heat = torch.sigmoid(maps[:, : self.num_classes].float())
            peaks = heat.eq(F.max_pool3d(heat, 3, stride=1, padding=1)) & heat.ge(score_threshold)
            results = []
            for b in range(images.shape[0]):
                label, x, y, z = torch.nonzero(peaks[b], as_tuple=True)
                scores = heat[b, label, x, y, z]
                order = torch.argsort(scores, descending=True)[: 4 * max_detections]
                label, x, y, z, scores = label[order], x[order], y[order], z[order], scores[order]
                extent = torch.exp(maps[b, self.num_classes:, x, y, z].float()).T.clamp(min=1.0)
                centre = torch.stack([x, y, z], dim=1).float() + 0.5
                boxes = torch.cat([centre - extent / 2, centre + extent / 2], dim=1)
                # Inside the volume, as the targets (components of the mask) are.
                boxes = clip_boxes_to_image(boxes, images.shape[2:], remove_empty=False)[0]
                keep = _nms_per_class(boxes, scores, label, nms_iou, non_max_suppression)[:max_detections]
                results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": label[keep]})
        return results


def _nms_per_class(boxes, scores, labels, iou, nms) -> torch.Tensor:
    """Indices (into the inputs) kept by NMS within each class, by descending score."""
    kept = []
    for k in torch.unique(labels):
        index = torch.nonzero(labels == k).view(-1)
        kept.append(index[torch.as_tensor(nms(boxes[index], scores[index], iou), dtype=torch.long)])
    if not kept:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    kept = torch.cat(kept)
    return kept[torch.argsort(scores[kept], descending=True)]


@register("centernet_3d", task="detection")
def centernet_3d(*, in_channels: int = 1, num_classes: int = 1, patch_size: Sequence[int] = (32, 32, 32),
                 channels: Sequence[int] = (16, 32, 64), strides: Sequence[int] = (2, 2),
                 num_res_units: int = 1, min_sigma: float = 0.7, size_weight: float = 0.5) -> CenterNet3D:
    """CenterNet-style heatmap + box-extent detector on a MONAI U-Net (full resolution).

    ``num_classes`` counts foreground classes only; ``patch_size`` must be divisible by the
    product of ``strides``.
    """
    divisor = 1
    for s in strides:
        divisor *= int(s)
    if any(int(p) % divisor for p in patch_size):
        raise ValueError(f"centernet_3d: patch_size {list(patch_size)} must be divisible by {divisor} "
                         f"(the product of strides {list(strides)})")
    return CenterNet3D(in_channels, num_classes, channels, strides, num_res_units, min_sigma, size_weight)
