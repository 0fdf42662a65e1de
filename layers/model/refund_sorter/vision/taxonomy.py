"""ImageNet class → label and refund department, from the human-editable ``data/taxonomy.csv``.

The CSV is the one list of the model's 1000 classes (index, WordNet id, readable unique label, department).

A department's confidence is the sum of the probabilities of its classes, so "some kind of shoe" can be
certain even when the model hesitates between 'running shoe' and 'sandal'.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from refund_sorter.results import NOT_A_PRODUCT

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class Department:
    id: str
    name: str
    description: str


__all__ = ["NOT_A_PRODUCT", "Department", "Taxonomy"]


class Taxonomy:
    """Maps class probabilities to department probabilities with one matrix product."""

    def __init__(
        self, departments: tuple[Department, ...], labels: tuple[str, ...], class_departments: tuple[str, ...]
    ) -> None:
        self.departments = departments
        self.labels = labels
        self.class_departments = class_departments
        index = {d.id: i for i, d in enumerate(departments)}
        unknown = sorted(set(class_departments) - set(index))
        if unknown:
            raise ValueError(f"taxonomy names departments that departments.json lacks: {unknown}")
        self._membership = np.zeros((len(class_departments), len(departments)), dtype=np.float32)
        self._membership[np.arange(len(class_departments)), [index[d] for d in class_departments]] = 1.0

    @classmethod
    def load(cls, data_dir: Path) -> Taxonomy:
        departments = tuple(
            Department(d["id"], d["name"], d.get("description", ""))
            for d in json.loads((data_dir / "departments.json").read_text(encoding="utf-8"))
        )
        with (data_dir / "taxonomy.csv").open(encoding="utf-8", newline="") as f:
            rows = sorted(csv.DictReader(f), key=lambda row: int(row["class_index"]))
        if [int(r["class_index"]) for r in rows] != list(range(len(rows))):
            raise ValueError("taxonomy.csv must list every class index exactly once")
        return cls(departments, tuple(r["label"] for r in rows), tuple(r["department"] for r in rows))

    @property
    def department_ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.departments)

    def department_probabilities(self, class_probabilities: np.ndarray) -> np.ndarray:
        """``[N, 1000]`` class probabilities → ``[N, departments]``."""
        return class_probabilities @ self._membership
