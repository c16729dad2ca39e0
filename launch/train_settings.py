"""The training commands' per-dataset defaults (shared by launch/train_commands.py and
launch/profile_commands.py; plain data, no heavy imports)."""
from __future__ import annotations

from typing import Any

_DATASETS = ("digits", "cifar10", "cifar100", "tinyimagenet")
_STUDENTS = {"digits": "vit_digits", "cifar10": "vit_7_4_32", "cifar100": "vit_7_4_32",
             "tinyimagenet": "vit_9_12_64"}

_CIFAR = {"teacher_epochs": 300, "search_epochs": 100, "retrain_epochs": 300, "lr": 5e-4,
          "batch": 128, "warmup_epochs": 10, "weight_decay": 0.05, "label_smoothing": 0.1,
          "attn_dropout": 0.1, "drop_path": 0.1, "threads": None}
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"teacher_epochs": 200, "search_epochs": 100, "retrain_epochs": 200, "lr": 3e-3,
               "batch": 32, "warmup_epochs": 2, "weight_decay": 0.05, "label_smoothing": 0.0,
               "attn_dropout": 0.0, "drop_path": 0.0, "threads": 1},
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "tinyimagenet": _CIFAR,
}
"""Per dataset: epochs per stage, the TrainSettings and the torch threads used when an
option is not given.  Digits runs on one thread: the tiny model gains nothing from
more, and a fixed thread count keeps the float results reproducible across machines."""
