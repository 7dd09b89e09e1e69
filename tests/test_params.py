"""Params schema: defaults, the shipped params.yaml, ``--set`` overrides and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.core.errors import UsageError
from components.core.params import Params, load_params

REPO = Path(__file__).resolve().parents[1]


def test_shipped_params_yaml_is_valid_and_complete() -> None:
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    params = Params.model_validate(shipped)
    assert set(shipped) == set(Params.model_fields)
    assert params.prepare.tile_size > 0


def test_set_override_parses_yaml_values(tmp_path: Path) -> None:
    params = load_params(
        REPO / "params.yaml",
        [
            "train.epochs=3",
            "prepare.edge=drop",
            "preprocess.max_empty_fraction=null",
            "preprocess.split.train=0.8",
            "preprocess.split.val=0.1",
            "preprocess.split.test=0.1",
        ],
    )
    assert params.train.epochs == 3
    assert params.prepare.edge == "drop"
    assert params.preprocess.max_empty_fraction is None
    assert params.preprocess.split.train == 0.8


def test_missing_default_file_falls_back_to_schema_defaults(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_params(None, []).prepare.tile_size == Params().prepare.tile_size


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "train.epoch: unknown key"),
        ("train.epochs=three", "train.epochs"),
        ("nosection.key=1", "nosection: unknown key"),
        ("prepare.edge=wrap", "prepare.edge"),
        ("epochs=3", "section.key=value"),
        ("preprocess.split.train=0.9", "train + val + test must be 1"),
    ],
)
def test_bad_override_is_a_usage_error_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("+", r"\+")) as raised:
        load_params(REPO / "params.yaml", [override])
    assert raised.value.exit_code == 2


def test_named_params_file_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="params file not found"):
        load_params(tmp_path / "nope.yaml", [])


def test_params_file_with_an_unknown_section_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("prepare:\n  tile_size: 128\ntrian:\n  epochs: 1\n")
    with pytest.raises(UsageError, match="trian: unknown key"):
        load_params(bad, [])


def test_shipped_params_yaml_equals_the_schema_defaults() -> None:
    """A stage container without params.yaml must behave like the repository."""
    shipped = load_params(REPO / "params.yaml", []).model_dump(mode="json")
    assert shipped == Params().model_dump(mode="json")


def test_a_profile_applies_over_the_params_file_and_set_over_it() -> None:
    params = load_params(REPO / "params.yaml", ["train.epochs=5"], profile="gpu")
    assert params.train.arch == "fasterrcnn_resnet50_fpn_v2" and params.train.max_minutes is None
    assert params.train.epochs == 5, "--set wins over the profile"
    assert params.train.seed == load_params(REPO / "params.yaml").train.seed, "the rest stays"


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"--profile tpu: no such profile \(profiles: gpu\)"):
        load_params(REPO / "params.yaml", profile="tpu")
