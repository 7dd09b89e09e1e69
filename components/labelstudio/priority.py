"""Active learning: how useful a tile is to label next, from the scores of the model's boxes.

Every rule (``labelstudio.priority``) gives a priority in [0, 1]; 1 is labelled first. A box's
*doubt* is a tent on its score ``s`` that peaks at the decision threshold ``t`` (the score from
which a box is shown as a pre-annotation) and falls to 0 at scores 0 and 1::

    doubt(s) = s / t            below t
    doubt(s) = (1 - s) / (1 - t)  from t

- ``margin``: the doubt of the tile's most doubtful box (least-confidence sampling): a tile
  with a box the model can barely decide on comes first, wherever its other boxes are.
- ``middling``: ``1 - Π(1 - doubt(s_i))``, the chance that at least one box is a mistake if
  each is one with its doubt: every middling box adds to it, so tiles with many come first.
- ``random``: a draw per task, seeded by ``labelstudio.seed`` (the baseline of the bench).

Boxes count from ``labelstudio.candidate_score`` up (the model's near misses are the panels an
annotator would have to draw); a tile without any has priority 0. Label Studio serves the
lowest prediction score first (uncertainty sampling, and an ascending order on the predictions
score), so a task's prediction score is ``1 - priority``: the model's confidence in its reading
of the whole tile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

PriorityRule = Literal["margin", "middling", "random"]
PRIORITY_RULES: tuple[PriorityRule, ...] = ("margin", "middling", "random")


def box_doubt(score: float, threshold: float) -> float:
    """The tent: 1 at ``threshold``, 0 at scores 0 and 1 (a threshold at 0 or 1 keeps one side)."""
    score = min(max(score, 0.0), 1.0)
    if score < threshold:
        return score / threshold
    if threshold >= 1.0:
        return 1.0
    return (1.0 - score) / (1.0 - threshold)


def random_priority(task_id: int, seed: int) -> float:
    """A uniform draw in [0, 1) that depends only on the seed and the task."""
    return float(np.random.default_rng([seed, task_id]).random())


def tile_priority(
    scores: Sequence[float],
    rule: PriorityRule,
    threshold: float,
    *,
    task_id: int = 0,
    seed: int = 0,
) -> float:
    """The priority of a tile whose candidate boxes have ``scores`` (see the module doc)."""
    if rule == "random":
        return random_priority(task_id, seed)
    doubts = [box_doubt(score, threshold) for score in scores]
    if not doubts:
        return 0.0
    if rule == "margin":
        return max(doubts)
    if rule == "middling":
        return 1.0 - math.prod(1.0 - doubt for doubt in doubts)
    raise ValueError(f"unknown priority rule {rule!r} (one of {PRIORITY_RULES})")


def task_score(priority: float) -> float:
    """The prediction score Label Studio sorts by, lowest first: ``1 - priority``."""
    return round(1.0 - priority, 6)


def priority_of_task_score(score: float) -> float:
    """Back from the task score Label Studio stores to the priority."""
    return round(1.0 - score, 6)
