"""The record of a ``predict`` run: where it stands, so that an interrupted run resumes.

``<out>/predict.json`` is rewritten (atomically) after every batch Label Studio accepted: every
unlabeled task up to ``after_task_id`` has its prediction of ``model_version``. A run that
finds a record of the same model version and project that is not ``done`` starts after that
task; Label Studio's own list of each task's model versions keeps a rerun from adding a
prediction twice even where the record lags behind the server (a batch accepted just before
the connection dropped).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from components.core import uri as uri_io
from components.core.errors import SolarpipeError

RECORD_FILE = "predict.json"
RunStatus = Literal["running", "done", "failed"]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PredictRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_version: str
    model: str
    project_id: int
    project_url: str
    priority: str
    score_threshold: float
    status: RunStatus = "running"
    after_task_id: int = 0
    tasks_predicted: int = 0
    tasks_already_predicted: int = 0
    boxes: int = 0
    missing_tiles: list[str] = []
    error: str | None = None
    started_at: str = ""
    updated_at: str = ""

    def resumes(self, model_version: str, project_id: int) -> bool:
        """Whether a new run of ``model_version`` on ``project_id`` continues this one."""
        return (
            self.status != "done"
            and self.model_version == model_version
            and self.project_id == project_id
        )


def record_uri(out_uri: str) -> str:
    return uri_io.join(out_uri, RECORD_FILE)


def load_record(out_uri: str) -> PredictRecord | None:
    """The record under ``out_uri``; None when there is none."""
    uri = record_uri(out_uri)
    if not uri_io.exists(uri):
        return None
    try:
        return PredictRecord.model_validate(uri_io.read_json(uri))
    except ValidationError as exc:
        raise SolarpipeError(
            f"not a predict record: {uri} ({exc.errors()[0]['msg']}); move it away to start over"
        ) from exc


def save_record(out_uri: str, record: PredictRecord) -> None:
    record.updated_at = now()
    uri_io.write_json(record_uri(out_uri), record.model_dump(mode="json"))
