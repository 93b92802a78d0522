"""Edge attribution of connectome models, scored against known perturbed edges.

Captum's ``IntegratedGradients`` on the ``connectome`` input of a trained connectome model
(:mod:`cogimg.models.connectome`: ``connectome_mlp`` on vectors ``(B, E)``, ``brainnetcnn`` /
``connectome_gnn`` on matrices ``(B, R, R)``) gives one attribution per input entry; for a
matrix the two entries of an edge, ``(i, j)`` and ``(j, i)``, are summed. The baseline of the
path integral is all zeros: the training subjects' mean connectome in the tangent space (where
every vector is a deviation from the training reference), "no connectivity" for correlations.

Edges are ranked by the mean absolute attribution over the explained subjects; the top-``k``
precision is the share of the ``k`` highest-ranked edges that are truly perturbed (the
synthetic cohort's ground truth, :func:`cogimg.data.func.load_edge_truth`). Its reference is a
random ranking, whose expected top-``k`` precision is exactly ``n_true / n_edges`` for every
``k`` (the hits of a uniformly random ``k``-subset are hypergeometric with mean
``k · n_true / n_edges``).

Edges are numbered as the upper triangle without the diagonal, ``torch.triu_indices(R, R, 1)``
order (the vector layout of :class:`~cogimg.data.connectome.ConnectomeDataModule` with
``discard_diagonal``, which is nilearn's ``sym_matrix_to_vec`` order of the same entries).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn


def edge_pairs(num_nodes: int) -> np.ndarray:
    """``(E, 2)`` int: the regions ``(i, j)``, ``i < j``, of each edge in vector order."""
    rows, cols = torch.triu_indices(int(num_nodes), int(num_nodes), 1)
    return torch.stack([rows, cols], 1).numpy()


def edge_attributions(model: nn.Module, connectomes: torch.Tensor, target: int | torch.Tensor = 0,
                      n_steps: int = 32, num_nodes: int | None = None) -> torch.Tensor:
    """Integrated gradients per edge: ``(B, E)`` (signed; evidence for ``target``).

    Args:
        model: a connectome model ``(B, E)`` or ``(B, R, R)`` → ``(B, K)``; put in eval mode.
        connectomes: the model's input, vectors ``(B, E)`` (diagonal discarded) or matrices
            ``(B, R, R)``.
        target: the output column explained (class index, or ``0`` for a regression), one
            for all or ``(B,)``.
        n_steps: Riemann steps of the path integral from the all-zero baseline.
        num_nodes: ``R``; default ``model.num_nodes``.
    """
    from captum.attr import IntegratedGradients

    r = int(num_nodes if num_nodes is not None else model.num_nodes)
    n_edges = r * (r - 1) // 2
    x = connectomes.detach().float()
    if x.ndim == 2 and x.shape[1] != n_edges:
        raise ValueError(f"connectome vectors must hold the {n_edges} edges of {r} regions "
                         f"(diagonal discarded), got {tuple(x.shape)}")
    if x.ndim == 3 and x.shape[1:] != (r, r):
        raise ValueError(f"connectome matrices must be (B, {r}, {r}), got {tuple(x.shape)}")
    if x.ndim not in (2, 3):
        raise ValueError(f"connectomes must be (B, E) or (B, R, R), got {tuple(x.shape)}")
    model.eval()
    attr = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                n_steps=n_steps)
    if attr.ndim == 3:
        rows, cols = torch.triu_indices(r, r, 1)
        attr = attr[:, rows, cols] + attr[:, cols, rows]
    return attr.detach()


def rank_edges(attributions: torch.Tensor | np.ndarray) -> np.ndarray:
    """Edge indices ``(E,)`` by decreasing mean ``|attribution|`` over subjects (``(B, E)``);
    ties keep vector order."""
    score = np.abs(np.asarray(attributions, dtype=np.float64)).mean(axis=0)
    return np.argsort(-score, kind="stable")


def truth_mask(num_nodes: int, edges: Iterable[tuple[int, int]]) -> np.ndarray:
    """``(E,)`` bool: which edges (region index pairs, either order) are truly perturbed."""
    index = {tuple(p): e for e, p in enumerate(edge_pairs(num_nodes).tolist())}
    mask = np.zeros(len(index), dtype=bool)
    for a, b in edges:
        if a == b:
            raise ValueError(f"edge ({a}, {b}) is a self-loop; the connectome has no diagonal")
        key = (min(int(a), int(b)), max(int(a), int(b)))
        if key not in index:
            raise ValueError(f"edge {key} outside a {num_nodes}-region connectome")
        mask[index[key]] = True
    return mask


def truth_edges(tables: Iterable, region_names: Sequence[str], effect: str | None = None
                ) -> set[tuple[int, int]]:
    """The region-index pairs of every perturbed edge in the subjects' ground-truth tables
    (:func:`cogimg.data.func.load_edge_truth`; ``effect`` keeps one disease's)."""
    position = {str(n): i for i, n in enumerate(region_names)}
    edges = set()
    for table in tables:
        if effect is not None:
            table = table[table["effect"] == effect]
        for a, b in zip(table["region_a"], table["region_b"]):
            if str(a) not in position or str(b) not in position:
                raise ValueError(f"ground-truth edge ({a}, {b}) names a region not in the "
                                 f"parcellation ({len(region_names)} regions)")
            i, j = position[str(a)], position[str(b)]
            edges.add((min(i, j), max(i, j)))
    return edges


def top_k_precision(ranking: np.ndarray, mask: np.ndarray, k: int) -> float:
    """Share of the first ``k`` ranked edges that are in ``mask`` (``(E,)`` bool)."""
    if not 1 <= k <= len(ranking):
        raise ValueError(f"k={k} outside 1..{len(ranking)} edges")
    return float(np.asarray(mask)[np.asarray(ranking)[:k]].mean())


def random_top_k_precision(n_edges: int, n_true: int, k: int) -> float:
    """Expected top-``k`` precision of a uniformly random ranking: exactly ``n_true / n_edges``
    (hypergeometric mean ``k · n_true / n_edges`` hits among ``k``)."""
    if not (0 <= n_true <= n_edges and 1 <= k <= n_edges):
        raise ValueError(f"need 0 ≤ n_true ≤ n_edges and 1 ≤ k ≤ n_edges, got "
                         f"n_true={n_true}, n_edges={n_edges}, k={k}")
    return n_true / n_edges


def score_edge_attribution(model: nn.Module, connectomes: torch.Tensor,
                           target: int | torch.Tensor, edges: Iterable[tuple[int, int]],
                           ks: Sequence[int] = (5, 10, 20), n_steps: int = 32
                           ) -> dict[str, object]:
    """Attribute, rank and score: ``{"n_edges", "n_true", "top_edges" (the 20 best (i, j)),
    "precision": {k: p}, "random": {k: p}}`` (``k`` above ``n_edges`` dropped)."""
    r = int(model.num_nodes)
    attr = edge_attributions(model, connectomes, target, n_steps, r)
    ranking, mask = rank_edges(attr), truth_mask(r, edges)
    pairs = edge_pairs(r)
    ks = [int(k) for k in ks if 1 <= int(k) <= len(ranking)]
    return {"n_edges": len(ranking), "n_true": int(mask.sum()),
            "top_edges": [tuple(int(v) for v in pairs[e]) for e in ranking[:20]],
            "precision": {k: top_k_precision(ranking, mask, k) for k in ks},
            "random": {k: random_top_k_precision(len(ranking), int(mask.sum()), k) for k in ks}}


def edge_table(scores: Mapping[str, object]) -> list[dict]:
    """Rows ``k, precision, random`` of :func:`score_edge_attribution`'s result."""
    return [{"k": k, "precision": scores["precision"][k], "random": scores["random"][k]}
            for k in scores["precision"]]


__all__ = ["edge_attributions", "edge_pairs", "edge_table", "random_top_k_precision",
           "rank_edges", "score_edge_attribution", "top_k_precision", "truth_edges",
           "truth_mask"]
