"""Heads on an embedding: the lab-abnormality and diagnosis heads (logits), and the pre-training projector."""

from __future__ import annotations

from torch import Tensor, nn


class Head(nn.Module):
    """[B, E] → logits [B, n_outputs]: linear, or one hidden layer when ``hidden_dim`` > 0."""

    def __init__(self, embedding_dim: int, n_outputs: int, *, hidden_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_outputs = n_outputs
        if hidden_dim > 0:
            self.net = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(embedding_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, n_outputs)
            )
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(embedding_dim, n_outputs))

    def forward(self, embedding: Tensor) -> Tensor:
        return self.net(embedding)


class Projector(nn.Module):
    """Maps an encoder's embedding into the joint space where the pre-training loss compares modalities.

    Kept out of the served model: as in CLIP/VICReg, the loss acts on a projection so the
    embedding itself stays general.
    """

    def __init__(self, embedding_dim: int, joint_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Linear(embedding_dim, joint_dim))

    def forward(self, embedding: Tensor) -> Tensor:
        return self.net(embedding)
