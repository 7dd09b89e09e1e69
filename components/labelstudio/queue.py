"""The most useful tiles first in Label Studio: the project's model version and sampling, a Data
Manager tab, and the next K tasks.

What Label Studio 1.23 does with them, checked against the real server
(``tests/test_labelstudio_predict.py``):

- the project's ``model_version`` picks the predictions the labeling UI shows as pre-annotations
  and the ones the Data Manager's ``predictions_score`` averages (unset, it averages every
  version's: a new model version must be set there);
- ``sampling = "Uncertainty sampling"`` makes the labeling stream (*Label All Tasks*,
  ``/api/projects/<id>/next``) serve the unlabeled task whose prediction of that version has
  the lowest score first;
- a tab ordered by ``tasks:predictions_score`` ascending and filtered to unlabeled, scored tasks
  lists them in that order, and *Label Tasks As Displayed* from it follows the order.

``predict`` sets all three once every prediction of its run is uploaded; ``next`` reads the
same order back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from components.core.errors import SolarpipeError
from components.core.params import LabelStudioParams
from components.labelstudio.client import connect, labelstudio_errors
from components.labelstudio.priority import priority_of_task_score
from components.labelstudio.project import label_target, require_project
from components.labelstudio.task_pages import number_filter

UNCERTAINTY_SAMPLING = "Uncertainty sampling"
PRIORITY_ORDERING = ["tasks:predictions_score"]  # ascending: the lowest task score first


@dataclass(frozen=True)
class NextTask:
    """One task of the queue: its rank, id, tile, priority and where to open it."""

    rank: int
    task_id: int
    image: Any
    priority: float
    url: str


def priority_filters() -> dict[str, Any]:
    """Unlabeled tasks that have a score from the project's model version."""
    items = [
        number_filter("total_annotations", "equal", 0),
        number_filter("predictions_score", "greater_or_equal", 0),
    ]
    return {"conjunction": "and", "items": items}


def priority_view_data(title: str) -> dict[str, Any]:
    return {"title": title, "filters": priority_filters(), "ordering": PRIORITY_ORDERING}


def ensure_priority_view(client: Any, project_id: int, title: str) -> tuple[int, str]:
    """The project's tab titled ``title`` with the priority filter and order: (id, action)."""
    wanted = priority_view_data(title)
    views = [
        view for view in client.views.list(project=project_id) if view.data.get("title") == title
    ]
    if not views:
        return client.views.create(project=project_id, data=wanted).id, "created"
    view = min(views, key=lambda candidate: candidate.id)
    current = {key: view.data.get(key) for key in wanted}
    if current == wanted:
        return view.id, "unchanged"
    client.views.update(id=view.id, project=project_id, data={**view.data, **wanted})
    return view.id, "updated"


def point_project_at(
    client: Any, project: Any, version: str, uncertainty_sampling: bool
) -> dict[str, Any]:
    """Make ``version`` the project's model version (pre-annotations and scores) and, when
    asked, switch it to uncertainty sampling; returns what changed."""
    wanted: dict[str, Any] = {"model_version": version, "show_collab_predictions": True}
    if uncertainty_sampling:
        wanted["sampling"] = UNCERTAINTY_SAMPLING
    changes = {name: value for name, value in wanted.items() if getattr(project, name) != value}
    if changes:
        client.projects.update(project.id, **changes)
    return changes


def tab_link(url: str, project_id: int, view_id: int | None) -> str:
    """The project's Data Manager, on the priority tab when there is one."""
    tab = f"?tab={view_id}" if view_id is not None else ""
    return f"{url}/projects/{project_id}/data{tab}"


def task_link(url: str, project_id: int, task_id: int, view_id: int | None) -> str:
    link = tab_link(url, project_id, view_id)
    return f"{link}{'&' if '?' in link else '?'}task={task_id}"


def next_tasks(
    client: Any, url: str, project: Any, data_key: str, top: int, view_id: int | None
) -> list[NextTask]:
    """The ``top`` unlabeled tasks Label Studio serves first, most useful first."""
    if not project.model_version:
        raise SolarpipeError(
            f"project {project.title!r} has no model version yet: run "
            "`solarpipe labelstudio predict --model …` first"
        )
    query = {"filters": priority_filters(), "ordering": PRIORITY_ORDERING}
    pager = client.tasks.list(
        project=project.id,
        query=json.dumps(query),
        page_size=top,
        include="id,data,predictions_score",
        resolve_uri=False,
    )
    scored = [task for task in pager.items or [] if task.predictions_score is not None]
    return [
        NextTask(
            rank=rank,
            task_id=task.id,
            image=(task.data or {}).get(data_key),
            priority=priority_of_task_score(float(task.predictions_score)),
            url=task_link(url, project.id, task.id, view_id),
        )
        for rank, task in enumerate(scored[:top], start=1)
    ]


def find_view_id(client: Any, project_id: int, title: str) -> int | None:
    ids = [
        view.id for view in client.views.list(project=project_id) if view.data.get("title") == title
    ]
    return min(ids) if ids else None


def print_next_tasks(params: LabelStudioParams, top: int) -> list[NextTask]:
    """Connect, find the project and print its ``top`` next tasks as a table."""
    connection = connect()
    client = connection.client
    with labelstudio_errors(connection.url):
        project = require_project(client, params.title, connection.url)
        target = label_target(project.label_config or "", project.title)
        view_id = find_view_id(client, project.id, params.view_title)
        queue = next_tasks(client, connection.url, project, target.data_key, top, view_id)
    if not queue:
        print(f"no unlabeled task of {project.title!r} has a prediction of {project.model_version}")
        return queue
    print(f"next in {project.title!r} ({project.model_version}), most useful first:")
    print(f"{'rank':>4}  {'task':>7}  {'priority':>8}  tile")
    for item in queue:
        print(f"{item.rank:>4}  {item.task_id:>7}  {item.priority:>8.3f}  {item.image}  {item.url}")
    return queue
