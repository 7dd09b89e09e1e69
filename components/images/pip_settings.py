"""The pip settings an image build reads from its ``pip_conf`` secret, local package folders included.

A local folder of packages (a PEP 503 index root with ``simple/``, or a flat folder of wheels)
is served on loopback over HTTP for the duration of the build, so pip inside the build finds
the wheels already on this host's disk instead of downloading them again (the build runs with
``--network host``). The settings reach pip as a BuildKit secret: they never enter the image,
its history or the layer cache keys, so a new port does not invalidate cached layers.
"""

from __future__ import annotations

import configparser
import functools
import http.server
import io
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from components.core.errors import UsageError

PYPI_SIMPLE = "https://pypi.org/simple"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` read-only on 127.0.0.1 (a free port); yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name=f"serve {folder}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def check_folder(folder: str) -> Path:
    path = Path(folder).resolve()
    if not path.is_dir():
        raise UsageError(f"--local-index {folder}: not a folder")
    return path


def render_pip_conf(
    base_conf: str | None, index_urls: Sequence[str], find_links: Sequence[str]
) -> str:
    """``base_conf`` (a pip.conf's text, or None) with local indexes and find-links put first.

    pip takes the first of equal candidates in the order find-links, index-url, extra-index-url,
    so the local indexes become the index-url and the configured one (default PyPI) an extra:
    wheels on this disk win, packages missing there still come from upstream.
    """
    config = configparser.ConfigParser(interpolation=None)
    if base_conf:
        config.read_string(base_conf)
    if not config.has_section("global"):
        config.add_section("global")
    extra_urls = config.get("global", "extra-index-url", fallback="").split()
    if index_urls:
        upstream = config.get("global", "index-url", fallback=PYPI_SIMPLE)
        config.set("global", "index-url", index_urls[0])
        extra_urls = [*index_urls[1:], upstream, *extra_urls]
    links = [*find_links, *config.get("global", "find-links", fallback="").split()]
    for key, values in (("extra-index-url", extra_urls), ("find-links", links)):
        if values:
            config.set("global", key, "\n".join(values))
    text = io.StringIO()
    config.write(text)
    return text.getvalue()


def read_pip_conf(pip_conf: str | None) -> str | None:
    if not pip_conf:
        return None
    try:
        text = Path(pip_conf).read_text()
        configparser.ConfigParser(interpolation=None).read_string(text)
    except OSError as exc:
        raise UsageError(f"--pip-conf {pip_conf}: {exc.strerror}") from exc
    except configparser.Error as exc:
        raise UsageError(f"--pip-conf {pip_conf}: not a pip.conf ({exc})") from exc
    return text


@contextmanager
def pip_conf_for_build(
    base_conf: str | None, local_folders: Sequence[str], out_dir: Path
) -> Iterator[Path | None]:
    """Serve ``local_folders`` and write ``base_conf`` plus them as a pip.conf into ``out_dir``.

    Yields the pip.conf's path, or None when there is nothing to tell pip.
    """
    folders = [check_folder(folder) for folder in local_folders]
    if base_conf is None and not folders:
        yield None
        return
    with ExitStack() as servers:
        index_urls, find_links = [], []
        for folder in folders:
            url = servers.enter_context(serve_folder(folder))
            if (folder / "simple").is_dir():
                index_urls.append(f"{url}simple/")
            else:
                find_links.append(url)
        path = out_dir / "pip.conf"
        path.write_text(render_pip_conf(base_conf, index_urls, find_links))
        path.chmod(0o600)
        yield path
