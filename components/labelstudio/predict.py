"""``solarpipe labelstudio predict``: the exported model's boxes as pre-annotations on the
project's unlabeled tasks, and the most useful tiles first.

Checks come first (options, the model, the server and its token, the project, its S3 storages,
the model's labels against the project's), then the tasks stream through in pages: unlabeled
tasks by id after a cursor (``task_pages``); their tiles fetched from S3 on a thread pool one
page ahead; the model over them in batches; each page's predictions uploaded in one request on
a second thread while the next page is inferred. After every page Label Studio accepted, the
record (``predict_record``) moves its cursor, so a run that stops resumes there. Tasks that
already hold a prediction of this model version are skipped: a rerun adds nothing and a new
model version adds its own. When every page is in, the project's model version, sampling and
priority tab point at this run (``queue``), so annotators never see half a run's predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from components.core import uri as uri_io
from components.core.errors import NotFoundError, SolarpipeError
from components.core.logs import get_logger
from components.core.params import LabelStudioParams
from components.core.progress import progress_bar
from components.labelstudio.client import connect, labelstudio_errors
from components.labelstudio.predict_record import (
    PredictRecord,
    load_record,
    now,
    record_uri,
    save_record,
)
from components.labelstudio.predictions import (
    LabelTarget,
    TileDetections,
    check_run_id,
    export_identity,
    model_version,
    prediction_payload,
)
from components.labelstudio.priority import tile_priority
from components.labelstudio.project import (
    check_model_labels,
    label_target,
    require_project,
    require_storages,
)
from components.labelstudio.queue import ensure_priority_view, point_project_at, tab_link
from components.labelstudio.task_pages import TaskPage, TaskRef, unlabeled_pages

log = get_logger(__name__)


@dataclass
class PredictRun:
    """Everything a run needs once the checks passed."""

    client: Any
    url: str
    project: Any
    target: LabelTarget
    model: Any  # the TorchScript ServedDetector
    version: str
    threshold: float
    params: LabelStudioParams
    out_uri: str
    record: PredictRecord


@dataclass
class PageOutcome:
    """One page after inference: the payloads to upload and what to count once they are in."""

    last_id: int
    payloads: list[dict[str, Any]] = field(default_factory=list)
    already_predicted: int = 0
    missing_tiles: list[str] = field(default_factory=list)

    @property
    def boxes(self) -> int:
        return sum(len(payload["result"]) for payload in self.payloads)


@dataclass
class PredictSummary:
    """What a finished run did, for the command's last lines."""

    record: PredictRecord
    record_uri: str
    queue_url: str
    project_changes: dict[str, Any]
    view_action: str


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- the tiles and the model ----------------------------------------------------------------


def load_task_tile(task: TaskRef, *, data_key: str, attempts: int = 3) -> Any | None:
    """The task's tile as a uint8 ``C×H×W`` tensor; None when the bucket no longer has it."""
    from components.ml.dataset import FetchOptions, decode_tile, fetch_tile_bytes

    image = task.image
    if not isinstance(image, str) or not uri_io.is_s3(image):
        raise SolarpipeError(
            f"task {task.task_id}: data.{data_key} is {image!r}, not an s3:// URI "
            "(predict reads the tiles of the project's S3 import storage)"
        )
    try:
        data = fetch_tile_bytes(image, FetchOptions(attempts=attempts))
    except NotFoundError:
        return None
    return decode_tile(data, image)


def detect(model: Any, tiles: Sequence[tuple[TaskRef, Any]], floor: float) -> list[TileDetections]:
    """The model's boxes from ``floor`` up on each ``(task, C×H×W tile)``."""
    import torch

    if not tiles:
        return []
    with torch.inference_mode():
        outputs = model([tile.permute(1, 2, 0) for _, tile in tiles], floor)
    classes = list(model.classes)
    return [
        TileDetections(
            task_id=task.task_id,
            image=task.image,
            width=int(tile.shape[2]),
            height=int(tile.shape[1]),
            boxes=[tuple(box) for box in output["boxes"].cpu().tolist()],
            scores=output["scores"].cpu().tolist(),
            labels=[classes[int(index) - 1] for index in output["labels"].cpu().tolist()],
        )
        for (task, tile), output in zip(tiles, outputs, strict=True)
    ]


def missing_tile_error(task: TaskRef) -> NotFoundError:
    return NotFoundError(
        f"the bucket no longer has the tile of task {task.task_id}: {task.image} "
        "(restore it, or set labelstudio.on_missing_tile=skip)"
    )


def predict_page(run: PredictRun, page: TaskPage, fetched: dict[int, Future[Any]]) -> PageOutcome:
    """Inference over one page's fetched tiles, in batches; the predictions to upload."""
    params = run.params
    outcome = PageOutcome(last_id=page.last_id)
    todo = [task for task in page.tasks if task.task_id in fetched]
    outcome.already_predicted = len(page.tasks) - len(todo)
    floor = min(params.candidate_score, run.threshold)
    for batch in chunks(todo, params.batch_size):
        tiles = []
        for task in batch:
            tile = fetched[task.task_id].result()
            if tile is None and params.on_missing_tile == "fail":
                raise missing_tile_error(task)
            if tile is None:
                outcome.missing_tiles.append(str(task.image))
                continue
            tiles.append((task, tile))
        for detections in detect(run.model, tiles, floor):
            priority = tile_priority(
                detections.scores,
                params.priority,
                run.threshold,
                task_id=detections.task_id,
                seed=params.seed,
            )
            outcome.payloads.append(
                prediction_payload(detections, run.target, run.threshold, priority, run.version)
            )
    return outcome


# --- streaming --------------------------------------------------------------------------------


def fetched_ahead(
    pages: Iterator[TaskPage],
    pool: ThreadPoolExecutor,
    fetch: Callable[[TaskRef], Any],
    version: str,
) -> Iterator[tuple[TaskPage, dict[int, Future[Any]]]]:
    """Each page with its tiles' fetches, the next page's fetches already started."""
    current: tuple[TaskPage, dict[int, Future[Any]]] | None = None
    for page in pages:
        fetches = {
            task.task_id: pool.submit(fetch, task)
            for task in page.tasks
            if version not in task.model_versions
        }
        if current is not None:
            yield current
        current = (page, fetches)
    if current is not None:
        yield current


def upload(run: PredictRun, payloads: list[dict[str, Any]]) -> None:
    """One request for a page's predictions; Label Studio creates all of them or none."""
    if not payloads:
        return
    with labelstudio_errors(run.url):
        response = run.client.projects.import_predictions(id=run.project.id, request=payloads)
    created = getattr(response, "created", None)
    if created is not None and created != len(payloads):
        raise SolarpipeError(
            f"Label Studio at {run.url} created {created} of {len(payloads)} predictions"
        )


def settle(run: PredictRun, uploading: Future[None], outcome: PageOutcome) -> None:
    """Wait for a page's upload; then move the record's cursor past the page."""
    uploading.result()
    record = run.record
    record.after_task_id = outcome.last_id
    record.tasks_predicted += len(outcome.payloads)
    record.tasks_already_predicted += outcome.already_predicted
    record.boxes += outcome.boxes
    record.missing_tiles += outcome.missing_tiles
    save_record(run.out_uri, record)


def settle_quietly(run: PredictRun, in_flight: tuple[Future[None], PageOutcome] | None) -> None:
    """After a failure: record the page uploading then, if it got in; report nothing else."""
    if in_flight is None:
        return
    try:
        settle(run, *in_flight)
    except Exception as late:  # the first failure is the one to report
        log.debug("the upload before the failure failed too: %s", late)


def pipeline(
    run: PredictRun,
    pages: Iterator[TaskPage],
    fetch_pool: ThreadPoolExecutor,
    upload_pool: ThreadPoolExecutor,
    bar: Any,
) -> None:
    """Infer page n while page n-1 uploads and page n+1's tiles download."""
    fetch = partial(load_task_tile, data_key=run.target.data_key)
    in_flight: tuple[Future[None], PageOutcome] | None = None
    try:
        for page, fetched in fetched_ahead(pages, fetch_pool, fetch, run.version):
            outcome = predict_page(run, page, fetched)
            if in_flight is not None:
                settle(run, *in_flight)
            in_flight = (upload_pool.submit(upload, run, outcome.payloads), outcome)
            bar.update(len(page.tasks))
    except BaseException:
        settle_quietly(run, in_flight)
        raise
    if in_flight is not None:
        settle(run, *in_flight)


def stream(run: PredictRun) -> None:
    """Predict and upload every unlabeled task after the record's cursor (see the module doc)."""
    params = run.params
    with labelstudio_errors(run.url):  # listing, uploads: one line for any server fault
        pages = unlabeled_pages(
            run.client,
            run.project.id,
            run.target.data_key,
            run.record.after_task_id,
            params.page_size,
        )
        first = next(pages, None)
        if first is None:
            return
        fetch_pool = ThreadPoolExecutor(params.workers, thread_name_prefix="tile-fetch")
        upload_pool = ThreadPoolExecutor(1, thread_name_prefix="predictions-upload")
        try:
            with progress_bar(total=first.remaining, desc="predict", unit="task") as bar:
                pipeline(run, chain_first(first, pages), fetch_pool, upload_pool, bar)
        finally:
            fetch_pool.shutdown(wait=False, cancel_futures=True)
            upload_pool.shutdown(wait=True)


def chain_first(first: TaskPage, rest: Iterator[TaskPage]) -> Iterator[TaskPage]:
    yield first
    yield from rest


# --- one run ----------------------------------------------------------------------------------


def start_record(
    out_uri: str,
    version: str,
    model_uri: str,
    project: Any,
    url: str,
    params: LabelStudioParams,
    threshold: float,
) -> PredictRecord:
    """The record this run continues (same model version and project, not done) or a new one."""
    earlier = load_record(out_uri)
    if earlier is not None and earlier.resumes(version, project.id):
        log.info(
            "resuming %s after task %d (%s)", version, earlier.after_task_id, record_uri(out_uri)
        )
        earlier.status, earlier.error = "running", None
        record = earlier
    else:
        record = PredictRecord(
            model_version=version,
            model=model_uri,
            project_id=project.id,
            project_url=f"{url}/projects/{project.id}/data",
            priority=params.priority,
            score_threshold=threshold,
            started_at=now(),
        )
    save_record(out_uri, record)
    return record


def open_run(model_uri: str, out_uri: str, run_id: str, params: LabelStudioParams) -> PredictRun:
    """Every check, in the order a user fixes them; the model loaded; the record started."""
    from components.labelstudio.client import labelstudio_token, labelstudio_url
    from components.ml.scripted import load_scripted_model, resolve_device

    check_run_id(run_id)
    url, token = labelstudio_url(), labelstudio_token()
    model = load_scripted_model(model_uri, resolve_device(params.device, "labelstudio.device"))
    version = model_version(export_identity(model_uri), run_id)
    client = connect(url, token).client
    with labelstudio_errors(url):
        project = require_project(client, params.title, url)
        require_storages(client, project)
    target = label_target(project.label_config or "", project.title)
    check_model_labels(list(model.classes), target, model_uri)
    threshold = (
        float(model.score_threshold) if params.score_threshold is None else params.score_threshold
    )
    record = start_record(out_uri, version, model_uri, project, url, params, threshold)
    return PredictRun(
        client, url, project, target, model, version, threshold, params, out_uri, record
    )


def failed(run: PredictRun, exc: BaseException) -> SolarpipeError:
    """Record the failure; the error again, with where the run stopped and how to resume."""
    record = run.record
    record.status, record.error = "failed", str(exc) or type(exc).__name__
    try:
        save_record(run.out_uri, record)
    except SolarpipeError as unsaved:
        log.warning("could not update the record: %s", unsaved)
    where = (
        f"tasks up to {record.after_task_id} are done ({record.tasks_predicted} predicted)"
        if record.after_task_id
        else "no batch was uploaded"
    )
    error = SolarpipeError(
        f"{record.error}; {where}, recorded in {record_uri(run.out_uri)}: "
        "rerun the same command to resume"
    )
    error.exit_code = getattr(exc, "exit_code", 1)
    return error


def predict_to_labelstudio(
    model_uri: str, out_uri: str, run_id: str, params: LabelStudioParams
) -> PredictSummary:
    """Upload the model's predictions to the project's unlabeled tasks; see the module doc."""
    run = open_run(model_uri, out_uri, run_id, params)
    try:
        stream(run)
    except SolarpipeError as exc:
        raise failed(run, exc) from exc
    except KeyboardInterrupt as exc:
        failed(run, exc)
        raise
    with labelstudio_errors(run.url):
        project = run.client.projects.get(run.project.id)
        changes = point_project_at(run.client, project, run.version, params.uncertainty_sampling)
        view_id, view_action = ensure_priority_view(run.client, project.id, params.view_title)
    run.record.status = "done"
    save_record(out_uri, run.record)
    return PredictSummary(
        record=run.record,
        record_uri=record_uri(out_uri),
        queue_url=tab_link(run.url, project.id, view_id),
        project_changes=changes,
        view_action=view_action,
    )
