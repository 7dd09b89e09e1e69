"""The one retry policy of the data plane: attempts, exponential backoff with full jitter, and a
total deadline, for every S3 request, every broken S3 body and every remote raster read.

The policy comes from the environment at call time (``SOLARPIPE_S3_MAX_ATTEMPTS``,
``SOLARPIPE_S3_BACKOFF_S``, ``SOLARPIPE_S3_MAX_BACKOFF_S``, ``SOLARPIPE_S3_DEADLINE_S``), or
from a stage's params through :func:`using` (train's ``fetch_attempts``). Where the retrying
happens is elsewhere: botocore asks :func:`next_delay` before it repeats a request
(``core/s3.py``), and :func:`call` repeats what a request cannot (a body that broke while being
read, a raster window GDAL could not finish).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TypeVar

from components.core.errors import UsageError

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS_VARIABLE = "SOLARPIPE_S3_MAX_ATTEMPTS"
BACKOFF_VARIABLE = "SOLARPIPE_S3_BACKOFF_S"
MAX_BACKOFF_VARIABLE = "SOLARPIPE_S3_MAX_BACKOFF_S"
DEADLINE_VARIABLE = "SOLARPIPE_S3_DEADLINE_S"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to try one operation (one request, one object, one window)."""

    attempts: int = 5
    # First delay cap; it doubles per retry up to max_backoff_s, and the delay drawn is uniform
    # below the cap ("full jitter": clients that failed together do not retry together).
    backoff_s: float = 0.25
    max_backoff_s: float = 20.0
    deadline_s: float = 600.0  # no retry starts after this many seconds since the first try

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        """The policy the ``SOLARPIPE_S3_*`` variables set (defaults for the unset ones)."""
        env = os.environ if environ is None else environ
        default = cls()
        return cls(
            attempts=int(_number(env, ATTEMPTS_VARIABLE, default.attempts, minimum=1)),
            backoff_s=_number(env, BACKOFF_VARIABLE, default.backoff_s, minimum=0),
            max_backoff_s=_number(env, MAX_BACKOFF_VARIABLE, default.max_backoff_s, minimum=0),
            deadline_s=_number(env, DEADLINE_VARIABLE, default.deadline_s, minimum=0),
        )

    def with_attempts(self, attempts: int) -> RetryPolicy:
        return replace(self, attempts=attempts) if attempts > 0 else self

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based), jittered."""
        cap = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return random.uniform(0, cap)

    def next_delay(self, attempt: int, started: float) -> float | None:
        """The wait before another try after ``attempt`` tries begun at ``started``
        (``time.monotonic()``); ``None`` when the attempts or the deadline are used up."""
        if attempt >= self.attempts:
            return None
        wait = self.delay(attempt)
        if time.monotonic() - started + wait > self.deadline_s:
            return None
        return wait


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is not a number") from None
    if value < minimum:
        raise UsageError(f"{name}={text!r} must be at least {minimum:g}")
    return value


_scoped_policy: ContextVar[RetryPolicy | None] = ContextVar("solarpipe_retry_policy", default=None)


def current_policy() -> RetryPolicy:
    """The policy of this thread's :func:`using` block, else the environment's (read now)."""
    return _scoped_policy.get() or RetryPolicy.from_env()


@contextmanager
def using(policy: RetryPolicy) -> Iterator[RetryPolicy]:
    """Apply ``policy`` to the S3 requests and reads this thread makes inside the block."""
    token = _scoped_policy.set(policy)
    try:
        yield policy
    finally:
        _scoped_policy.reset(token)


class GaveUp(Exception):
    """Raised by :func:`call` from the last transient failure: ``attempts`` tries were made."""

    def __init__(self, cause: BaseException, attempts: int) -> None:
        super().__init__(f"{cause} (gave up after {attempts} attempts)")
        self.cause = cause
        self.attempts = attempts


def call(
    operation: Callable[[], T],
    transient: Callable[[BaseException], bool],
    what: str,
    policy: RetryPolicy | None = None,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """``operation()``, repeated under the policy while it fails with a ``transient`` error.

    ``before_retry`` runs before each new try (drop a broken connection or cache). A transient
    failure that outlives the policy is raised as :class:`GaveUp`; any other error at once.
    """
    policy = policy or current_policy()
    started = time.monotonic()
    attempt = 1
    while True:
        try:
            return operation()
        except Exception as exc:
            if not transient(exc):
                raise
            wait = policy.next_delay(attempt, started)
            if wait is None:
                raise GaveUp(exc, attempt) from exc
            log.debug("retrying %s in %.2f s (attempt %d failed: %s)", what, wait, attempt, exc)
            time.sleep(wait)
            if before_retry is not None:
                before_retry()
            attempt += 1
