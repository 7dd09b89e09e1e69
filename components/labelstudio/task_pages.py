"""The project's unlabeled tasks, listed in pages by task id after a cursor.

Each page is one ``GET /api/tasks`` with a Data Manager query: tasks without an annotation
(``total_annotations = 0``; a skipped task has none) whose id is above the cursor, in id order.
Paging by cursor instead of page number keeps the listing right while predictions and
annotations change the project underneath, and the cursor is what a resume record stores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskRef:
    """A task to predict: its id, its tile's URI and the model versions it has predictions of."""

    task_id: int
    image: Any  # the task's data value; an s3:// URI for tasks of an S3 import storage
    model_versions: frozenset[str]


@dataclass(frozen=True)
class TaskPage:
    tasks: list[TaskRef]
    remaining: int  # unlabeled tasks after the cursor, this page included

    @property
    def last_id(self) -> int:
        return self.tasks[-1].task_id


def number_filter(field: str, operator: str, value: float) -> dict[str, Any]:
    return {
        "filter": f"filter:tasks:{field}",
        "operator": operator,
        "type": "Number",
        "value": value,
    }


def unlabeled_query(after_id: int) -> str:
    """The Data Manager query of one page: unlabeled tasks above ``after_id``, by id."""
    items = [
        number_filter("id", "greater", after_id),
        number_filter("total_annotations", "equal", 0),
    ]
    return json.dumps({"filters": {"conjunction": "and", "items": items}, "ordering": ["tasks:id"]})


def model_versions(listed: Any) -> frozenset[str]:
    """A task's ``predictions_model_versions``: a list (PostgreSQL) or one comma-joined string
    (SQLite)."""
    if not listed:
        return frozenset()
    if isinstance(listed, str):
        return frozenset(version for version in listed.split(",") if version)
    return frozenset(str(version) for version in listed if version)


def task_page(client: Any, project_id: int, data_key: str, after_id: int, size: int) -> TaskPage:
    """The first ``size`` unlabeled tasks above ``after_id``."""
    pager = client.tasks.list(
        project=project_id,
        query=unlabeled_query(after_id),
        page_size=size,
        include="id,data,predictions_model_versions",
        resolve_uri=False,
    )
    tasks = [
        TaskRef(
            task_id=task.id,
            image=(task.data or {}).get(data_key),
            model_versions=model_versions(getattr(task, "predictions_model_versions", None)),
        )
        for task in pager.items or []
    ]
    total = getattr(pager.response, "total", None) if pager.response is not None else None
    return TaskPage(tasks=tasks, remaining=total if isinstance(total, int) else len(tasks))


def unlabeled_pages(
    client: Any, project_id: int, data_key: str, after_id: int, size: int
) -> Iterator[TaskPage]:
    """Pages of unlabeled tasks above ``after_id`` until none is left."""
    while True:
        page = task_page(client, project_id, data_key, after_id, size)
        if not page.tasks:
            return
        yield page
        after_id = page.last_id
