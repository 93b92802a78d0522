"""Detection models: registry entries, loss on empty and non-empty targets, whole-volume
detection with sliding windows, CenterNet heatmap targets and decoding."""

from __future__ import annotations

import pytest
import torch

from cogimg import models

TARGETS = [{"boxes": torch.tensor([[10.0, 10, 10, 14, 13, 12]]), "labels": torch.tensor([0])},
           {"boxes": torch.zeros(0, 6), "labels": torch.zeros(0, dtype=torch.long)}]


def test_registered_as_detection_models():
    assert {"retinanet_3d", "centernet_3d"} <= set(models.available("detection"))
    assert "retinanet_3d" not in models.available("segmentation")


@pytest.mark.parametrize("name", ["retinanet_3d", "centernet_3d"])
def test_loss_backward_and_detect_whole_volume(name):
    torch.manual_seed(0)
    net = models.get(name, in_channels=2, num_classes=1, patch_size=(16, 16, 16))
    assert sum(p.numel() for p in net.parameters()) < 1_000_000  # CPU-sized
    losses = net.loss(torch.randn(2, 2, 16, 16, 16), TARGETS)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    # A volume that is no multiple of the window: windows are stitched, boxes stay inside.
    net.eval()
    (found,) = net.detect(torch.randn(1, 2, 20, 24, 18), (16, 16, 16), score_threshold=0.0, max_detections=7)
    assert found["boxes"].shape[1] == 6 and 0 < len(found["boxes"]) <= 7
    assert found["scores"].shape == found["labels"].shape == (len(found["boxes"]),)
    assert bool((found["boxes"][:, 3:] >= found["boxes"][:, :3]).all())


def test_patch_size_must_fit_the_strides():
    with pytest.raises(ValueError, match="multiple of 8"):
        models.get("retinanet_3d", patch_size=(20, 16, 16))
    with pytest.raises(ValueError, match="divisible by 4"):
        models.get("centernet_3d", patch_size=(18, 16, 16))


def test_centernet_targets_and_decoding_round_trip():
    net = models.get("centernet_3d", num_classes=2, patch_size=(16, 16, 16))
    boxes = torch.tensor([[2.0, 3, 4, 5, 6, 7], [9.0, 9, 9, 10, 10, 10]])
    heat, centres, log_size = net.heatmap_targets((16, 16, 16), [{"boxes": boxes, "labels": torch.tensor([0, 1])}])
    # Centre of the 3³ box [2, 5) × [3, 6) × [4, 7) is voxel (3, 4, 5); of the 1-voxel box, (9, 9, 9).
    assert heat[0, 0, 3, 4, 5] == 1 and heat[0, 1, 9, 9, 9] == 1 and int(centres.sum()) == 2
    assert heat[0, 0].max() == 1 and 0 < heat[0, 0, 4, 4, 5] < 1 and heat[0, 1, 3, 4, 5] < 1e-3
    torch.testing.assert_close(log_size[0, :, 3, 4, 5], torch.log(torch.tensor([3.0, 3, 3])))

    # A network that outputs exactly these maps decodes them back to the boxes.
    class Oracle(torch.nn.Module):
        def forward(self, x):
            logit = torch.logit(heat.clamp(1e-4, 1 - 1e-4))
            return torch.cat([logit, log_size], dim=1).expand(x.shape[0], -1, -1, -1, -1)

    net.unet = Oracle()
    (found,) = net.detect(torch.zeros(1, 1, 16, 16, 16), (16, 16, 16), score_threshold=0.5)
    torch.testing.assert_close(found["boxes"], boxes)
    assert found["labels"].tolist() == [0, 1]


def test_retinanet_fpn_levels_have_strides_2_4_8():
    net = models.get("retinanet_3d", in_channels=1, num_classes=1, patch_size=(16, 16, 16))
    out = net(torch.zeros(1, 1, 16, 16, 16))
    assert [tuple(m.shape[2:]) for m in out["classification"]] == [(8, 8, 8), (4, 4, 4), (2, 2, 2)]


def _dark_cubes(generator: torch.Generator, n: int, size: int = 16, side: int = 3):
    """``n`` noise patches ``(n, 1, size³)`` (SD 0.5) with 1-2 cubes of ``side`` voxels at -3."""
    images = 0.5 * torch.randn(n, 1, size, size, size, generator=generator)
    targets = []
    for image in images:
        boxes = []
        for _ in range(int(torch.randint(1, 3, (1,), generator=generator))):
            lo = torch.randint(1, size - side - 1, (3,), generator=generator)
            image[0, lo[0]:lo[0] + side, lo[1]:lo[1] + side, lo[2]:lo[2] + side] -= 3.0
            boxes.append(torch.cat([lo, lo + side]).float())
        targets.append({"boxes": torch.stack(boxes), "labels": torch.zeros(len(boxes), dtype=torch.long)})
    return images, targets


@pytest.mark.slow
@pytest.mark.parametrize("name", ["retinanet_3d", "centernet_3d"])
def test_detector_learns_to_find_small_cubes(name):
    """Each detector, trained briefly on patches of dark 3-voxel cubes in noise, finds the
    cubes of new patches with confident boxes (score >= 0.5) and nothing else."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = models.get(name, in_channels=1, num_classes=1, patch_size=(16, 16, 16))
    test_images, test_targets = _dark_cubes(generator, 6)

    def sensitivity_and_false_positives() -> tuple[float, int]:
        """Share of cubes whose centre is within 1.5 voxels of a detection scored >= 0.5, and
        the count of such detections that are within 1.5 voxels of no cube."""
        net.eval()
        hits = total = false_positives = 0
        for found, target in zip(net.detect(test_images, (16, 16, 16), score_threshold=0.5), test_targets):
            centres = (found["boxes"][:, :3] + found["boxes"][:, 3:]) / 2
            truth = (target["boxes"][:, :3] + target["boxes"][:, 3:]) / 2
            near = torch.cdist(truth, centres) <= 1.5
            hits += int(near.any(dim=1).sum())
            false_positives += int((~near.any(dim=0)).sum())
            total += len(truth)
        return hits / total, false_positives

    before, _ = sensitivity_and_false_positives()
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)
    net.train()
    for _ in range(200):
        images, targets = _dark_cubes(generator, 2)
        loss = sum(net.loss(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after, false_positives = sensitivity_and_false_positives()
    # An untrained CenterNet already scores some dark cubes >= 0.5: MONAI's U-Net ends in a
    # residual unit whose identity path adds normalised features to the heatmap logits.
    assert after >= 0.9 and after > before and false_positives <= 1, (before, after, false_positives)
