"""How S3 requests and bodies meet the one retry policy (``core/retry.py``).

Every request a client sends (our calls, s3transfer's multipart parts, paginated listings) is
retried by the policy: botocore's own retry handler is replaced by one that keeps botocore's
judgement of what is transient (5xx, ``SlowDown`` and the other throttling codes, refused or
reset connections, timeouts) and takes attempts, backoff and deadline from the policy. A body
that breaks while it is read is not a failed request (boto3 does not retry it):
``is_broken_body`` names those faults for the readers in ``core/uri.py``.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from typing import Any

from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError
from botocore.retries.standard import RetryEventAdapter, StandardRetryConditions
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeoutError

from components.core import retry

# What breaks a response body while it is read: measured through tests/fault_proxy.py, a cut
# body surfaces as ResponseStreamingError (urllib3's ProtocolError inside) or, when the
# length check catches it, IncompleteReadError; a stalled one as a read timeout.
BROKEN_BODY_ERRORS: tuple[type[BaseException], ...] = (
    ResponseStreamingError,
    IncompleteReadError,
    ReadTimeoutError,
    ProtocolError,
    Urllib3ReadTimeoutError,
    http.client.IncompleteRead,
    ConnectionError,
    TimeoutError,
)

log = logging.getLogger(__name__)
_STARTED = "solarpipe_retry_started"
# Botocore's classification of transient faults; the attempts are counted by our policy.
_TRANSIENT = StandardRetryConditions(max_attempts=2**31)
_RETRY_CONTEXT = RetryEventAdapter()
_last_request = threading.local()


def is_broken_body(exc: BaseException) -> bool:
    """A response body that broke off while being read (worth reading again)."""
    return isinstance(exc, BROKEN_BODY_ERRORS)


def _stamp_start(context: dict[str, Any], **_: Any) -> None:
    context.setdefault(_STARTED, time.monotonic())


def _needs_retry(attempts: int, request_dict: dict[str, Any], **kwargs: Any) -> float | None:
    """botocore's ``needs-retry`` hook: the wait before the next try, or None (no retry)."""
    context = _RETRY_CONTEXT.create_retry_context(
        attempts=attempts, request_dict=request_dict, **kwargs
    )
    _last_request.gave_up_after = None
    if not _TRANSIENT.is_retryable(context):
        return None
    started = request_dict["context"].get(_STARTED, time.monotonic())
    wait = retry.current_policy().next_delay(attempts, started)
    if wait is None:
        _last_request.gave_up_after = attempts
        return None
    cause = context.caught_exception or f"HTTP {context.http_response.status_code}"
    log.debug(
        "retrying %s in %.2f s (attempt %d: %s)",
        context.operation_model.name,
        wait,
        attempts,
        cause,
    )
    return wait


def gave_up_after() -> int | None:
    """How many tries this thread's last request made before the policy gave up (or None)."""
    return getattr(_last_request, "gave_up_after", None)


def use_retry_policy(client: Any) -> None:
    """Replace botocore's retry handler with the policy's (see the module docstring)."""
    events = client.meta.events
    events.unregister("needs-retry.s3", unique_id="retry-config-s3")
    events.register("before-call.s3", _stamp_start, unique_id="solarpipe-retry-start")
    events.register("needs-retry.s3", _needs_retry, unique_id="solarpipe-retry")
