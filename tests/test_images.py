"""The stage images: names, the build inputs (requirement layers, pip settings served to the
build), `solarpipe images build` on a real engine, and the built images' contract: entrypoint,
labels, non-root user, no torch in the light images, one shared torch layer, no credentials.

Tests marked ``docker`` need a running engine and the built images; they skip without them,
or fail when SOLARPIPE_REQUIRE_DOCKER is set (CI builds the images before running them).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from components.cli import main as solarpipe
from components.commands.kfp import load_pipeline_module
from components.core.errors import UsageError
from components.core.params import Params
from components.images import names
from components.images.names import (
    IMAGES,
    default_tag,
    image_name,
    package_version,
)
from components.images.pip_settings import pip_conf_for_build, render_pip_conf
from components.s3server import free_port
from tests.docker_support import engine_or_skip, images_or_skip, run_in_image, skip_or_fail
from tests.source_tree import copy_build_inputs

REPO = Path(__file__).resolve().parents[1]
LIGHT_IMAGES = tuple(name for name, spec in IMAGES.items() if spec.family == "light")
TORCH_IMAGES = tuple(name for name, spec in IMAGES.items() if spec.family == "torch")
IMAGE_USER = "10001:10001"
# What must never be baked into an image: credential-like variables, the build's secrets.
SECRET_PATTERN = re.compile(
    r"AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)|PASSWORD|TOKEN=|BEGIN CERTIFICATE|"
    r"index-url|127\.0\.0\.1",
    re.IGNORECASE,
)


def load_extra_requirements() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "extra_requirements", REPO / "docker" / "extra_requirements.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_names_carry_the_package_version_and_registry() -> None:
    name, tag = image_name("train").split(":")
    assert name == "solarpipe-train"
    assert re.fullmatch(rf"{re.escape(package_version())}-[0-9a-f]{{12}}", tag)
    assert image_name("prepare", "dev", "ghcr.io/org/") == "ghcr.io/org/solarpipe-prepare:dev"


def test_image_tag_changes_with_the_code_and_only_with_it(tmp_path: Path) -> None:
    """Two builds around a code change get different references; the same tree, the same one."""
    tree = copy_build_inputs(tmp_path / "tree")
    before = default_tag(tree)
    assert default_tag(tree) == before
    (tree / "components" / "__pycache__").mkdir(exist_ok=True)
    (tree / "components" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"compiled")
    (tree / "data").mkdir()
    (tree / "data" / "scene.tif").write_bytes(b"not in the image")
    (tree / "README.md").write_text("# only the wheel's description\n")
    assert default_tag(tree) == before, "caches, data and the README are not build inputs"
    stage_main = tree / "components" / "prepare" / "run.py"
    stage_main.write_text(stage_main.read_text() + "\n# a code change\n")
    assert default_tag(tree) != before
    assert default_tag(tmp_path / "not-a-checkout") == package_version()


def test_unknown_image_has_no_name() -> None:
    with pytest.raises(UsageError, match="unknown image 'tiles'; images: prepare, preprocess"):
        image_name("tiles")


def test_images_name_prints_what_build_tags(capsys: pytest.CaptureFixture[str]) -> None:
    assert solarpipe(["images", "name", "prepare"]) == 0
    assert capsys.readouterr().out.strip() == image_name("prepare")
    assert solarpipe(["images", "name", "serve", "--registry", "ghcr.io/org", "--tag", "t"]) == 0
    assert capsys.readouterr().out.strip() == "ghcr.io/org/solarpipe-serve:t"
    with pytest.raises(SystemExit) as exit_info:
        solarpipe(["images", "name", "tiles"])
    assert exit_info.value.code == 2


def test_extra_requirements_expand_self_references_once(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\ndependencies = ["boto3>=1"]\n'
        "[project.optional-dependencies]\n"
        'torch = ["torch==2.0"]\n'
        'train = ["demo[torch]", "lightning"]\n'
        'all = ["Demo[train, torch]", "ruff"]\n'
    )
    load_extra_requirements().main(str(tmp_path / "pyproject.toml"), str(tmp_path / "req"))
    read = {path.stem: path.read_text().split() for path in (tmp_path / "req").iterdir()}
    assert read == {
        "core": ["boto3>=1"],
        "torch": ["torch==2.0"],
        "train": ["torch==2.0", "lightning"],
        "all": ["torch==2.0", "lightning", "ruff"],
    }


def test_local_indexes_come_first_and_upstream_stays_an_extra_index() -> None:
    rendered = render_pip_conf(
        "[global]\nindex-url = https://mirror/simple\ntimeout = 60\n",
        ["http://127.0.0.1:1/simple/", "http://127.0.0.1:2/simple/"],
        ["http://127.0.0.1:3/"],
    )
    assert rendered.split("\n")[:7] == [
        "[global]",
        "index-url = http://127.0.0.1:1/simple/",
        "timeout = 60",
        "extra-index-url = http://127.0.0.1:2/simple/",
        "\thttps://mirror/simple",
        "find-links = http://127.0.0.1:3/",
        "",
    ]


def test_local_index_is_served_on_loopback_for_the_build(tmp_path: Path) -> None:
    index = tmp_path / "index"
    (index / "simple" / "demo").mkdir(parents=True)
    (index / "simple" / "demo" / "index.html").write_text('<a href="../../files/demo.whl">d</a>')
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"wheel")
    with pip_conf_for_build(None, [str(index), str(wheels)], tmp_path) as conf:
        assert conf is not None
        settings = dict(re.findall(r"^([\w-]+) = (\S+)$", conf.read_text(), re.MULTILINE))
        with urllib.request.urlopen(settings["index-url"] + "demo/") as response:
            assert b"../../files/demo.whl" in response.read()
        with urllib.request.urlopen(settings["find-links"]) as response:
            assert b"demo-1.0-py3-none-any.whl" in response.read()
    assert conf.stat().st_mode & 0o077 == 0


def test_no_pip_settings_means_no_pip_conf_secret(tmp_path: Path) -> None:
    with pip_conf_for_build(None, [], tmp_path) as conf:
        assert conf is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--push"], "--push needs --registry"),
        (["--ca-bundle", "/nonexistent/ca.pem"], "--ca-bundle /nonexistent/ca.pem: no such file"),
        (["--local-index", "/nonexistent/index", "--context", str(REPO)], "not a folder"),
        (["--stage", "tiles"], "invalid choice: 'tiles'"),
    ],
)
def test_bad_build_options_are_usage_errors(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(solarpipe(["images", "build", *options]))
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_build_without_engine_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert solarpipe(["images", "build", "--stage", "preview"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("solarpipe images: error: Docker engine not reachable")
    assert "\n" not in error


@pytest.fixture(scope="module")
def engine() -> Any:
    return engine_or_skip()


@pytest.fixture(scope="module")
def stage_images(engine: Any) -> dict[str, Any]:
    return images_or_skip(engine, IMAGES)


@pytest.mark.docker
def test_build_reuses_the_cache_and_prints_name_and_size(
    stage_images: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """Rebuilding a built image with the same base is a cache hit (no network needed)."""
    labels = stage_images["preview"].labels
    monkeypatch.setenv("SOLARPIPE_BASE_IMAGE", labels["org.opencontainers.image.base.name"])
    assert solarpipe(["images", "build", "--stage", "preview"]) == 0
    printed = capsys.readouterr().out
    size_mb = stage_images["preview"].attrs["Size"] / 1e6
    line = re.search(rf"^{re.escape(image_name('preview'))}  (\d+) MB", printed, re.MULTILINE)
    assert line, printed
    assert abs(int(line.group(1)) - size_mb) <= 1


@pytest.fixture()
def local_registry(tmp_path: Path) -> Iterator[str]:
    """A real registry (Debian's docker-registry) on loopback, which Docker trusts over HTTP."""
    executable = shutil.which("docker-registry")
    if not executable:
        skip_or_fail("docker-registry is not installed (scripts/setup-docker.sh installs it)")
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {tmp_path / 'storage'}\nhttp:\n  addr: {address}\n"
    )
    registry = subprocess.Popen(
        [executable, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{address}/v2/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the local registry did not start"
                time.sleep(0.2)
        yield address
    finally:
        registry.terminate()
        registry.wait(timeout=10)


@pytest.mark.docker
def test_push_sends_the_image_to_the_registry_and_compile_pins_its_digest(
    engine: Any,
    stage_images: dict[str, Any],
    local_registry: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    labels = stage_images["preview"].labels
    monkeypatch.setenv("SOLARPIPE_BASE_IMAGE", labels["org.opencontainers.image.base.name"])
    record = tmp_path / "pushed-images.json"
    monkeypatch.setattr(names, "PUSHED_RECORD", record)
    pushed = image_name("preview", registry=local_registry)
    try:
        argv = ["images", "build", "--stage", "preview", "--registry", local_registry, "--push"]
        assert solarpipe(argv) == 0
        digest = json.loads(record.read_text())[pushed]
        assert f"pushed {pushed}@{digest}" in capsys.readouterr().out
        request = urllib.request.Request(
            f"http://{local_registry}/v2/solarpipe-preview/manifests/{pushed.rsplit(':', 1)[1]}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        with urllib.request.urlopen(request) as response:
            manifest = json.load(response)
        assert manifest["config"]["digest"] == engine.images.get(pushed).id
        assert (
            f"{local_registry}/solarpipe-preview@{digest}"
            in engine.images.get(pushed).attrs["RepoDigests"]
        )
        # compile and submit pin the pushed image to its digest; images never pushed stay tagged
        pipeline = load_pipeline_module(REPO / "pipeline.py")
        kubeflow = Params().kubeflow.model_copy(update={"registry": local_registry})
        references = pipeline.images_for(kubeflow)
        assert references["preview"] == f"{pushed}@{digest}"
        assert "@" not in references["train"]
    finally:
        engine.images.remove(pushed, noprune=True)


@pytest.mark.docker
@pytest.mark.parametrize("name", IMAGES)
def test_image_runs_its_entrypoint_as_non_root_with_oci_labels(
    name: str, engine: Any, stage_images: dict[str, Any]
) -> None:
    image = stage_images[name]
    config = image.attrs["Config"]
    assert f"SOLARPIPE_ENTRYPOINT={IMAGES[name].entrypoint}" in config["Env"]
    assert config["User"] == IMAGE_USER
    assert image.labels["org.opencontainers.image.version"] == package_version()
    assert image.labels["org.opencontainers.image.title"] == f"solarpipe-{name}"
    assert image.labels["org.opencontainers.image.revision"]
    assert run_in_image(engine, image.id, "-u", entrypoint="id") == "10001"
    # The entrypoint runs the image's module with the container's arguments.
    output = engine.containers.run(image.id, ["--help"], remove=True, network_mode="none")
    # (the ``solarpipe`` command's own module says ``usage: solarpipe``)
    usage = "solarpipe" if IMAGES[name].entrypoint == "components.cli" else "python -m "
    assert f"usage: {usage}" in output.decode()
    if usage != "solarpipe":
        assert f"usage: python -m {IMAGES[name].entrypoint}" in output.decode()


@pytest.mark.docker
@pytest.mark.parametrize("stage", IMAGES)
def test_image_holds_no_credentials_in_config_history_or_files(
    stage: str, engine: Any, stage_images: dict[str, Any]
) -> None:
    image = stage_images[stage]
    environment = "\n".join(image.attrs["Config"]["Env"] or [])
    history = "\n".join(layer["CreatedBy"] for layer in image.history())
    labels = json.dumps(image.labels)
    for text in (environment, history, labels):
        assert not SECRET_PATTERN.search(text), SECRET_PATTERN.search(text)
    # The build secrets (CA bundle, pip.conf) were mounted for pip only, never copied in.
    leftovers = run_in_image(
        engine, image.id, "-c", "find /run/secrets /etc/pip.conf -type f 2>/dev/null || true",
        entrypoint="sh",
    )  # fmt: skip
    assert leftovers == ""


@pytest.mark.docker
def test_light_images_carry_no_torch(engine: Any, stage_images: dict[str, Any]) -> None:
    probe = "import importlib.util as u; print(u.find_spec('torch') is None)"
    for stage in LIGHT_IMAGES:
        assert run_in_image(engine, stage_images[stage].id, "-c", probe) == "True", stage


@pytest.mark.docker
def test_torch_images_share_one_cuda_capable_torch_layer(
    engine: Any, stage_images: dict[str, Any]
) -> None:
    light_layers = set(stage_images["preprocess"].attrs["RootFS"]["Layers"])
    torch_layers = [set(stage_images[s].attrs["RootFS"]["Layers"]) for s in TORCH_IMAGES]
    shared = set.intersection(*torch_layers) - light_layers
    assert shared, "the torch stages share no layer beyond the light base"
    probe = "import torch, torchvision; print(torch.__version__, torch.version.cuda is not None)"
    version, cuda_build = run_in_image(engine, stage_images["train"].id, "-c", probe).split()
    assert (version.split("+")[0], cuda_build) == ("2.14.1", "True")
