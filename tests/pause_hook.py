"""Run a module as ``python -m`` does, but stop for good at a chosen call: a deterministic point
in the middle of writing outputs, for the kill tests (no test code in the stages themselves).

    python -m tests.pause_hook MARKER MODULE:ATTRIBUTE PATTERN NTH -m components.<stage> ARGS...

From the ``NTH`` call of ``MODULE.ATTRIBUTE`` (a function, or ``Class.method``) whose arguments'
text matches ``PATTERN`` (a regex) on, the file ``MARKER`` is created and the calling thread waits
forever; the test waits for ``MARKER`` to appear, then kills the process.
"""

from __future__ import annotations

import functools
import importlib
import re
import runpy
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def install(marker: str, target: str, pattern: str, nth: int) -> None:
    module_name, _, attribute_path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = attribute_path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original: Callable[..., Any] = getattr(owner, name)
    matching = re.compile(pattern)
    calls = [0]

    @functools.wraps(original)
    def paused(*args: Any, **kwargs: Any) -> Any:
        if matching.search(" ".join(str(arg) for arg in args)):
            calls[0] += 1
            if calls[0] >= nth:
                Path(marker).touch()
                threading.Event().wait()
        return original(*args, **kwargs)

    setattr(owner, name, paused)


def main(argv: list[str]) -> None:
    marker, target, pattern, nth, flag, module, *rest = argv
    if flag != "-m":
        raise SystemExit(
            "usage: python -m tests.pause_hook MARKER TARGET PATTERN NTH -m MODULE ..."
        )
    install(marker, target, pattern, int(nth))
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
