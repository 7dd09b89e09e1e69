"""The labeling project as ``setup`` leaves it: found by title, its storages, its label control.

``predict`` and ``next`` start here: each fault a user can meet (no such project, a project
without the S3 storages, a model whose labels the project does not have) is one line naming the
project and what to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from components.core.errors import NotFoundError, SolarpipeError, UsageError
from components.labelstudio.predictions import LabelTarget

SETUP_HINT = "run `solarpipe labelstudio setup --tiles s3://… --annotations s3://…` first"


def find_project(client: Any, title: str) -> Any | None:
    """The one project titled ``title``, None when there is none; several are an error."""
    matches = [project for project in client.projects.list(title=title) if project.title == title]
    if len(matches) > 1:
        ids = ", ".join(str(project.id) for project in matches)
        raise SolarpipeError(
            f"{len(matches)} Label Studio projects are titled {title!r} (ids {ids}); "
            "rename or delete all but one, or set labelstudio.title"
        )
    return matches[0] if matches else None


def require_project(client: Any, title: str, url: str) -> Any:
    """The project titled ``title``, or a not-found error with the setup hint."""
    project = find_project(client, title)
    if project is None:
        raise NotFoundError(
            f"no Label Studio project titled {title!r} at {url} (labelstudio.title); {SETUP_HINT}"
        )
    return project


def require_storages(client: Any, project: Any) -> None:
    """Fail unless the project has an S3 import storage (its tiles) and an S3 export storage."""
    missing = [
        kind
        for kind, storages in (
            ("import", client.import_storage.s3),
            ("export", client.export_storage.s3),
        )
        if not storages.list(project=project.id)
    ]
    if missing:
        raise SolarpipeError(
            f"Label Studio project {project.title!r} (id {project.id}) has no S3 "
            f"{' and no S3 '.join(missing)} storage; {SETUP_HINT}"
        )


def label_target(label_config: str, project_title: str) -> LabelTarget:
    """The project's RectangleLabels control, the image it labels and that image's data key."""
    from label_studio_sdk.label_interface import LabelInterface

    try:
        interface = LabelInterface(label_config)
    except Exception as exc:  # the SDK raises several XML and config error types
        raise SolarpipeError(f"project {project_title!r}: unreadable label config ({exc})") from exc
    controls = [control for control in interface.controls if control.tag == "RectangleLabels"]
    if len(controls) != 1:
        raise UsageError(
            f"project {project_title!r} has {len(controls)} RectangleLabels controls, "
            f"predict needs one; {SETUP_HINT}"
        )
    control = controls[0]
    image = interface.get_object(control.to_name[0])
    return LabelTarget(
        from_name=control.name,
        to_name=image.name,
        data_key=str(image.value).lstrip("$"),
        labels=tuple(control.labels),
    )


def check_model_labels(model_classes: Sequence[str], target: LabelTarget, model_uri: str) -> None:
    """A usage error when the model predicts a class the project's label config does not have."""
    unknown = [name for name in model_classes if name not in target.labels]
    if unknown:
        raise UsageError(
            f"the model {model_uri} predicts {list(model_classes)} but the project's "
            f"RectangleLabels are {list(target.labels)}: {unknown} not among them "
            "(pass the model trained for this project, or set labelstudio.labels and rerun setup)"
        )
