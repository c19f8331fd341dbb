"""The project's built-in data set: scikit-learn's digits (8x8 images, 10 classes).

It ships inside scikit-learn, so nothing is downloaded.  The split is fixed and
stratified so every run of every method sees the same train and test sets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPLIT_SEED = 0
TEST_FRACTION = 0.25


@dataclass(frozen=True)
class Digits:
    x_train: torch.Tensor  # (N, 1, 8, 8) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_split() -> Digits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return Digits(torch.from_numpy(xtr), torch.from_numpy(ytr),
                  torch.from_numpy(xte), torch.from_numpy(yte))
