"""Reference networks in plain torch.nn (no torchvision), sized for the digits set.

Layers carry no bias: the engine's GEMM has no bias port (a bias would be one more
K row of ones; left out to keep the datapath and the gradient predictor simple).
The CNN uses a stride-2 convolution instead of pooling so that every layer of it
runs on the engine's GEMM/conv datapath.
"""
from __future__ import annotations

import torch
from torch import nn

MODELS = ("mlp", "cnn")


class MLP(nn.Module):
    def __init__(self, hidden: int = 64, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, hidden, bias=False)
        self.fc3 = nn.Linear(hidden, classes, bias=False)

    def forward(self, x):
        x = x.flatten(1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class CNN(nn.Module):
    """conv 1->8 3x3 s1 p1 (8x8) -> ReLU -> conv 8->16 3x3 s2 p1 (4x4) -> ReLU -> fc 256->10."""

    def __init__(self, c1: int = 8, c2: int = 16, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(c2 * 4 * 4, classes, bias=False)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def build_model(name: str) -> nn.Module:
    if name == "mlp":
        return MLP()
    if name == "cnn":
        return CNN()
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
