"""Networks on functional connectomes (tag ``connectome``): MLP, BrainNetCNN, graph network.

Every model maps the ``connectome`` of a :class:`~cogimg.data.connectome.ConnectomeDataModule`
batch to outputs ``(B, num_outputs)`` (class logits, or one standardised score). They share the
fusion models' call, ``model(x, availability=None, tabular=None)`` (the last two are ignored),
so the classification and regression tasks drive them through the same ``logits`` protocol
with ``input_key="connectome"``; ``forward_features`` / ``num_features`` /
``reset_classifier(0)`` make each usable as an encoder branch.

- ``connectome_mlp``: an MLP (``torchvision.ops.MLP``) on the vectorised connectome ``(B, E)``
  (a ``(B, R, R)`` matrix is vectorised to its upper triangle).
- ``brainnetcnn``: BrainNetCNN (Kawahara et al. 2017, NeuroImage 146:1038–1049): edge-to-edge
  filters (a cross-shaped ``1 × R`` + ``R × 1`` convolution, so each edge sees the edges of
  both its nodes), an edge-to-node and a node-to-graph filter, then fully connected layers, on
  the matrix ``(B, R, R)``. No maintained package ships it (PyPI has none; the authors' code
  is Caffe), so it is written here.
- ``connectome_gnn``: a graph network from PyTorch Geometric (``gcn``, ``gat`` or ``sage``
  convolutions, mean pooling) on the graph of each matrix: node features are the nodes'
  connectivity profiles (matrix rows), edges each node's ``top_k`` strongest ``|r|`` neighbours
  or those above ``threshold`` (:func:`cogimg.data.connectome.top_k_edges`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from cogimg.data.connectome import top_k_edges
from cogimg.models.registry import register

CONNECTOME = "connectome"
#: the batch entry of structure–function fusion: ``{"image", "availability", "connectome",
#: "connectome_available"}`` (:class:`cogimg.data.structure_function.StructureFunctionDataModule`)
STRUCTURE_FUNCTION = "structure_function"
#: Batch entries a task's network may read (the tasks' ``input_key``).
INPUT_KEYS = ("image", CONNECTOME, STRUCTURE_FUNCTION)
#: structure–function strategies (:class:`StructureFunctionFusion`)
SF_FUSIONS = ("structure", "function", "early", "intermediate", "late")
CONVS = ("gcn", "gat", "sage")


def _check_nodes(num_nodes: int) -> int:
    if int(num_nodes) < 2:
        raise ValueError(f"a connectome needs num_nodes ≥ 2 regions, got {num_nodes}")
    return int(num_nodes)


def as_matrix(x: torch.Tensor, num_nodes: int, name: str) -> torch.Tensor:
    """``x`` ``(B, R, R)`` checked (``name`` in the error: the model that needs a matrix)."""
    if x.ndim != 3 or x.shape[1:] != (num_nodes, num_nodes):
        raise ValueError(f"{name} reads connectome matrices (B, {num_nodes}, {num_nodes}), got "
                         f"{tuple(x.shape)}; set the datamodule's output: matrix")
    return x


class _Head(nn.Module):
    """Shared: a feature extractor then a linear head that ``reset_classifier(0)`` removes."""

    num_features: int

    def reset_classifier(self, num_outputs: int) -> None:
        self.head = nn.Linear(self.num_features, num_outputs) if num_outputs else nn.Identity()

    def forward(self, x: torch.Tensor, availability=None, tabular=None) -> torch.Tensor:
        return self.head(self.forward_features(x))


class ConnectomeMLP(_Head):
    """MLP on the vectorised connectome: ``(B, E)`` (or ``(B, R, R)``) → ``(B, num_outputs)``."""

    def __init__(self, num_nodes: int, num_outputs: int, hidden: Sequence[int] = (128, 32),
                 dropout: float = 0.3, discard_diagonal: bool = True) -> None:
        super().__init__()
        from torchvision.ops import MLP

        self.num_nodes = _check_nodes(num_nodes)
        self.offset = 1 if discard_diagonal else 0
        rows, cols = torch.triu_indices(self.num_nodes, self.num_nodes, self.offset)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.in_features = int(rows.numel())
        self.mlp = MLP(self.in_features, list(hidden), activation_layer=nn.ReLU, dropout=dropout)
        self.num_features = int(hidden[-1])
        self.reset_classifier(num_outputs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = as_matrix(x, self.num_nodes, "connectome_mlp")[:, self.rows, self.cols]
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"connectome_mlp expects vectors (B, {self.in_features}) for "
                             f"{self.num_nodes} regions (diagonal "
                             f"{'discarded' if self.offset else 'kept'}), got {tuple(x.shape)}")
        return torch.relu(self.mlp(x))


class EdgeToEdge(nn.Module):
    """BrainNetCNN E2E filter: ``(B, C, R, R)`` → ``(B, C', R, R)``; edge (i, j) sums a row
    filter over row i and a column filter over column j."""

    def __init__(self, in_channels: int, out_channels: int, num_nodes: int) -> None:
        super().__init__()
        self.row = nn.Conv2d(in_channels, out_channels, (1, num_nodes))
        self.col = nn.Conv2d(in_channels, out_channels, (num_nodes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.row(x) + self.col(x)  # (B, C', R, 1) + (B, C', 1, R) broadcast


class BrainNetCNN(_Head):
    """BrainNetCNN: E2E → E2N → N2G → fully connected, on ``(B, R, R)`` matrices."""

    def __init__(self, num_nodes: int, num_outputs: int, e2e: Sequence[int] = (16, 16),
                 e2n: int = 64, n2g: int = 128, hidden: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        self.num_nodes = _check_nodes(num_nodes)
        widths = [1, *[int(c) for c in e2e]]
        self.e2e = nn.ModuleList(EdgeToEdge(a, b, self.num_nodes)
                                 for a, b in itertools.pairwise(widths))
        self.e2n = nn.Conv2d(widths[-1], e2n, (1, self.num_nodes))
        self.n2g = nn.Conv2d(e2n, n2g, (self.num_nodes, 1))
        self.act = nn.LeakyReLU(0.33)
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(n2g, hidden), nn.LeakyReLU(0.33))
        self.num_features = int(hidden)
        self.reset_classifier(num_outputs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = as_matrix(x, self.num_nodes, "brainnetcnn")[:, None]
        for layer in self.e2e:
            h = self.act(layer(h))
        h = self.act(self.e2n(h))  # (B, e2n, R, 1)
        h = self.act(self.n2g(h)).flatten(1)  # (B, n2g)
        return self.fc(h)


class ConnectomeGNN(_Head):
    """Graph network (PyTorch Geometric) on each connectome's top-k graph, mean-pooled."""

    def __init__(self, num_nodes: int, num_outputs: int, conv: str = "gcn", hidden: int = 64,
                 layers: int = 2, top_k: int | None = 8, threshold: float | None = None,
                 dropout: float = 0.2) -> None:
        super().__init__()
        from torch_geometric import nn as gnn

        if conv not in CONVS:
            raise ValueError(f"conv={conv!r}; choose one of {list(CONVS)}")
        if layers < 1:
            raise ValueError(f"layers must be ≥ 1, got {layers}")
        self.num_nodes = _check_nodes(num_nodes)
        self.conv, self.top_k, self.threshold = conv, top_k, threshold
        make = {"gcn": lambda a, b: gnn.GCNConv(a, b),
                "gat": lambda a, b: gnn.GATConv(a, b, heads=1, edge_dim=1),
                "sage": lambda a, b: gnn.SAGEConv(a, b)}[conv]
        widths = [self.num_nodes] + [int(hidden)] * layers
        self.convs = nn.ModuleList(make(a, b) for a, b in itertools.pairwise(widths))
        self.dropout = nn.Dropout(dropout)
        self.pool = gnn.global_mean_pool
        self.num_features = int(hidden)
        self.reset_classifier(num_outputs)

    def graphs(self, x: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``B`` graphs of ``x`` ``(B, R, R)`` as one PyG-style batch: node features
        ``(B·R, R)``, ``edge_index`` ``(2, E)``, edge weights ``(E,)``, graph index ``(B·R,)``."""
        x = as_matrix(x, self.num_nodes, "connectome_gnn")
        edge_index, weight = top_k_edges(x, self.top_k, self.threshold)
        nodes = x.reshape(-1, self.num_nodes)
        graph = torch.arange(x.shape[0], device=x.device).repeat_interleave(self.num_nodes)
        return nodes, edge_index, weight, graph

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h, edge_index, weight, graph = self.graphs(x)
        for conv in self.convs:
            if self.conv == "gcn":  # GCN normalisation needs non-negative weights
                h = conv(h, edge_index, weight.abs())
            elif self.conv == "gat":
                h = conv(h, edge_index, weight[:, None])
            else:
                h = conv(h, edge_index)
            h = self.dropout(torch.relu(h))
        return self.pool(h, graph, size=x.shape[0])


@register("connectome_mlp", task=CONNECTOME)
def connectome_mlp(*, num_nodes: int, num_outputs: int = 2, hidden: Sequence[int] = (128, 32),
                   dropout: float = 0.3, discard_diagonal: bool = True) -> nn.Module:
    """MLP on the vectorised functional connectome (upper triangle)."""
    return ConnectomeMLP(num_nodes, num_outputs, hidden, dropout, discard_diagonal)


@register("brainnetcnn", task=CONNECTOME)
def brainnetcnn(*, num_nodes: int, num_outputs: int = 2, e2e: Sequence[int] = (16, 16),
                e2n: int = 64, n2g: int = 128, hidden: int = 32, dropout: float = 0.3) -> nn.Module:
    """BrainNetCNN (Kawahara et al. 2017): edge-to-edge, edge-to-node, node-to-graph filters."""
    return BrainNetCNN(num_nodes, num_outputs, e2e, e2n, n2g, hidden, dropout)


@register("connectome_gnn", task=CONNECTOME)
def connectome_gnn(*, num_nodes: int, num_outputs: int = 2, conv: str = "gcn", hidden: int = 64,
                   layers: int = 2, top_k: int | None = 8, threshold: float | None = None,
                   dropout: float = 0.2) -> nn.Module:
    """Graph network (PyG GCN / GAT / GraphSAGE) on the top-k connectome graph."""
    return ConnectomeGNN(num_nodes, num_outputs, conv, hidden, layers, top_k, threshold, dropout)


class StructureFunctionFusion(nn.Module):
    """A structural image model and a connectome encoder, fused (structure–function coupling).

    Input ``x``: the batch's ``structure_function`` entry, ``{"image" (B, M, X, Y, Z),
    "availability" (B, M), "connectome" (B, E) or (B, R, R), "connectome_available" (B,)}``;
    output ``(B, num_outputs)``. ``fusion``:

    - ``structure``: the image model alone (T1-only arm; the connectome is not read);
    - ``function``: the connectome model alone;
    - ``early``: the image channels stacked into one backbone
      (:class:`~cogimg.models.fusion.EarlyFusion`), its features joined with the connectome
      encoder's before one linear head (as the fusion models join the tabular branch);
    - ``intermediate``: one encoder per image modality
      (:class:`~cogimg.models.fusion.IntermediateFusion`, any of its heads) plus the
      connectome encoder, features concatenated before the head;
    - ``late``: an image classifier and a connectome classifier; probabilities (``"prob"``)
      or logits averaged over the available branches.

    A missing connectome (``connectome_available`` 0, e.g. a subject without fMRI at test
    time): early/intermediate zero its features and rescale the two branches by
    ``2 / available`` (the ``concat`` rule of the fusion models); late fusion averages the
    image branch alone. It warns once. Missing image modalities follow the image model.
    """

    def __init__(self, num_nodes: int, num_outputs: int, *, backbone: str,
                 modalities: Sequence[str], input_shape: Sequence[int],
                 fusion: str = "intermediate", use_modalities: Sequence[str] | None = None,
                 backbone_kwargs=None, connectome_model: str = "connectome_mlp",
                 connectome_kwargs=None, fusion_head: str = "concat",
                 late_combine: str = "prob", modality_dropout: float = 0.0) -> None:
        super().__init__()
        from cogimg.models.fusion import build_fusion_model

        if fusion not in SF_FUSIONS:
            raise ValueError(f"fusion={fusion!r}; choose one of {list(SF_FUSIONS)}")
        self.num_nodes, self.num_outputs = _check_nodes(num_nodes), int(num_outputs)
        # one output (a regression score) has no probabilities to average: logits are averaged
        self.fusion = fusion
        self.late_combine = "logit" if self.num_outputs == 1 else late_combine
        self._warned = False
        chosen = list(use_modalities or modalities)
        image_fusion = {"structure": "single" if len(chosen) == 1 else "early",
                        "early": "single" if len(chosen) == 1 else "early",
                        "intermediate": "intermediate" if len(chosen) > 1 else "single",
                        "late": "single" if len(chosen) == 1 else "late"}.get(fusion)
        self.image = None if fusion == "function" else build_fusion_model(
            image_fusion, backbone=backbone, modalities=modalities, num_classes=self.num_outputs,
            input_shape=input_shape, use_modalities=chosen, backbone_kwargs=backbone_kwargs,
            fusion_head=fusion_head, late_combine=late_combine, modality_dropout=modality_dropout)
        self.connectome = None if fusion == "structure" else build_connectome_model(
            connectome_model, num_outputs=self.num_outputs,
            model_kwargs={"num_nodes": self.num_nodes, **dict(connectome_kwargs or {})})
        if fusion in ("early", "intermediate"):
            width = self.image.head.in_features
            self.image.head = nn.Identity()  # image features (B, width)
            self.connectome.reset_classifier(0)
            self.head = nn.Linear(width + self.connectome.num_features, self.num_outputs)

    def forward(self, x, availability=None, tabular=None) -> torch.Tensor:
        if not isinstance(x, dict) or not {"image", "connectome"} <= set(x):
            raise ValueError("structure–function fusion reads the batch's 'structure_function' "
                             "entry {image, availability, connectome, connectome_available}; "
                             "use StructureFunctionDataModule and input_key: structure_function")
        image, avail = x["image"], x.get("availability")
        conn = x["connectome"]
        present = x.get("connectome_available")
        present = (torch.ones(conn.shape[0], device=conn.device) if present is None
                   else present.to(conn.dtype))
        if self.fusion == "structure":
            return self.image(image, avail)
        self._warn_if_missing(present)
        if self.fusion == "function":
            return self.connectome(conn)
        if self.fusion == "late":
            logits = torch.stack([self.image(image, avail), self.connectome(conn)], dim=1)
            weight = torch.stack([torch.ones_like(present), present], dim=1)[..., None]
            if self.late_combine == "logit":
                return (logits * weight).sum(1) / weight.sum(1)
            prob = (logits.softmax(-1) * weight).sum(1) / weight.sum(1)
            return prob.clamp_min(1e-8).log()
        scale = (2.0 / (1.0 + present))[:, None]
        feats = torch.cat([self.image(image, avail),
                           self.connectome.forward_features(conn) * present[:, None]], dim=1)
        return self.head(feats * scale)

    def _warn_if_missing(self, present: torch.Tensor) -> None:
        if self._warned or bool((present > 0.5).all()):
            return
        self._warned = True
        import warnings

        warnings.warn(f"{int((present < 0.5).sum())} sample(s) lack a connectome; "
                      f"{self.fusion} structure–function fusion uses the image branch alone for "
                      "them (warned once per model)", UserWarning, stacklevel=3)


@register("structure_function_fusion", task=CONNECTOME)
def structure_function_fusion(*, num_nodes: int, num_outputs: int = 2, backbone: str,
                              modalities: Sequence[str], input_shape: Sequence[int],
                              fusion: str = "intermediate",
                              use_modalities: Sequence[str] | None = None,
                              backbone_kwargs: dict | None = None,
                              connectome_model: str = "connectome_mlp",
                              connectome_kwargs: dict | None = None, fusion_head: str = "concat",
                              late_combine: str = "prob",
                              modality_dropout: float = 0.0) -> nn.Module:
    """T1w image model + connectome encoder (see :class:`StructureFunctionFusion`)."""
    return StructureFunctionFusion(
        num_nodes, num_outputs, backbone=backbone, modalities=modalities,
        input_shape=input_shape, fusion=fusion, use_modalities=use_modalities,
        backbone_kwargs=backbone_kwargs, connectome_model=connectome_model,
        connectome_kwargs=connectome_kwargs, fusion_head=fusion_head, late_combine=late_combine,
        modality_dropout=modality_dropout)


def build_connectome_model(name: str, *, num_outputs: int, model_kwargs=None) -> nn.Module:
    """The connectome registry model ``name`` with ``num_outputs`` outputs (the tasks' builder
    for ``input_key="connectome"``); ``model_kwargs`` must hold ``num_nodes``."""
    from cogimg.models.registry import available, get, spec

    if CONNECTOME not in spec(name).tasks:
        raise ValueError(f"model {name!r} does not read connectomes; input_key='connectome' takes "
                         f"one of {available(CONNECTOME)}")
    return get(name, num_outputs=int(num_outputs), **dict(model_kwargs or {}))


def with_num_nodes(model_kwargs, datamodule) -> dict:
    """``model_kwargs`` with ``num_nodes`` from the datamodule (set up) when not given, and
    whatever else the datamodule's ``model_defaults()`` names (the structure–function
    datamodule gives the image channels and shape)."""
    kwargs = dict(model_kwargs or {})
    defaults = getattr(datamodule, "model_defaults", None)
    for key, value in (defaults() if callable(defaults) else {}).items():
        kwargs.setdefault(key, value)
    if "num_nodes" not in kwargs:
        nodes = int(getattr(datamodule, "num_nodes", 0) or 0)
        if nodes < 2:
            raise ValueError("a connectome model needs num_nodes: give it in model_kwargs or use "
                             "a datamodule that sets num_nodes (ConnectomeDataModule)")
        kwargs["num_nodes"] = nodes
    return kwargs


__all__ = [
    "CONNECTOME",
    "CONVS",
    "INPUT_KEYS",
    "SF_FUSIONS",
    "STRUCTURE_FUNCTION",
    "BrainNetCNN",
    "ConnectomeGNN",
    "ConnectomeMLP",
    "EdgeToEdge",
    "StructureFunctionFusion",
    "as_matrix",
    "brainnetcnn",
    "build_connectome_model",
    "connectome_gnn",
    "connectome_mlp",
    "structure_function_fusion",
    "with_num_nodes",
]
