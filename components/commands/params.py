"""``solarpipe params``: print the effective params or their reference, or resolve a run's document.

Orchestrators use the last: ``--document`` (the params compiled into a pipeline) with per-run
``--section`` values applied over it, written once to ``--out`` (a Kubeflow run's
``s3://<bucket>/runs/<run id>/params.yaml``), and the values tasks need (``--write-value``, e.g.
``data.raster``) and each stage's params digest (``--write-digest``) as output files.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from components.core import uri as uri_io
from components.core.errors import UsageError
from components.core.params import (
    Params,
    merge_tree,
    params_digest,
    params_yaml,
    parse_override,
    parse_params_text,
    profile_tree,
    read_params_tree,
    set_dotted,
    stage_params,
    validate_params,
)
from components.core.stage import add_common_options, expand_environment
from components.core.stages import STAGE_NAMES


def configure(parser: argparse.ArgumentParser) -> None:
    add_common_options(parser)
    parser.add_argument(
        "--reference",
        action="store_true",
        help="print the markdown reference of every param instead",
    )
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="apply a profile over the params (profiles/NAME.yaml, e.g. gpu) before --set",
    )
    resolve = parser.add_argument_group("resolving a run's params (orchestrators)")
    resolve.add_argument(
        "--document", metavar="YAML", help="the params document as text, instead of --params"
    )
    resolve.add_argument(
        "--section",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "JSON"),
        help="apply a JSON object over params section NAME (repeatable; a Kubeflow pipeline "
        "parameter)",
    )
    resolve.add_argument(
        "--out",
        metavar="URI",
        help="write the resolved document here instead of printing it; {section.key} in the "
        "URI is replaced by that param, $(NAME) by the environment variable",
    )
    resolve.add_argument(
        "--write-value",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "PATH"),
        help="write the value of param KEY (e.g. data.raster) to the file PATH",
    )
    resolve.add_argument(
        "--write-digest",
        nargs=2,
        action="append",
        default=[],
        metavar=("STAGE", "PATH"),
        help="write the digest of the params STAGE reads to the file PATH",
    )
    parser.set_defaults(handler=print_params)


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # constrained items, e.g. list[Annotated[float, Field(gt=1)]]
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _is_uniform_table(model: type[BaseModel]) -> bool:
    """A model whose fields are all the same sub-model (one row per field reads better)."""
    annotations = {field.annotation for field in model.model_fields.values()}
    [annotation, *others] = annotations
    return (
        not others
        and isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and len(model.model_fields) > 2
    )


def reference_rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, description) for every leaf param, sections in schema order."""
    defaults = model().model_dump(mode="json")
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if _is_uniform_table(annotation):  # e.g. kubeflow.resources.<stage>: one row each
                for stage, value in defaults[name].items():
                    shown = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
                    yield f"{key}.{stage}", "mapping", shown, f"requests and limits of {stage}"
                continue
            yield from reference_rows(annotation, f"{key}.")
            continue
        default = yaml.safe_dump(defaults[name], default_flow_style=True, width=1000).strip()
        default = default.removesuffix("...").strip()
        yield key, _type_name(annotation), default, field.description or ""


def params_reference() -> str:
    """The markdown table of every param (the README's params reference is this output)."""
    lines = ["| param | type | default | meaning |", "|---|---|---|---|"]
    for key, type_name, default, description in reference_rows(Params):
        lines.append(f"| `{key}` | {type_name} | `{default}` | {description} |")
    return "\n".join(lines) + "\n"


def resolve_params(args: argparse.Namespace) -> Params:
    """The document (``--document`` or ``--params``), ``--section`` values, then ``--set``."""
    if args.document is not None and args.params:
        raise UsageError("give the params as --params URI or --document YAML, not both")
    if args.document is not None:
        tree = parse_params_text(args.document, "--document")
    else:
        tree = read_params_tree(args.params)
    if args.profile:
        tree = merge_tree(tree, profile_tree(args.profile))
    for section, text in args.section:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--section {section}: not a JSON object ({exc})") from exc
        if not isinstance(values, dict):
            raise UsageError(f"--section {section}: expected a JSON object, got {text!r}")
        tree = merge_tree(tree, {section: values})
    for text in args.overrides:
        set_dotted(tree, *parse_override(text))
    return validate_params(tree)


def param_value(params: Params, key: str) -> Any:
    value: Any = params
    for part in key.split("."):
        if not isinstance(value, BaseModel) or part not in type(value).model_fields:
            raise UsageError(f"--write-value {key}: no such param")
        value = getattr(value, part)
    return value


def write_outputs(
    params: Params, values: Sequence[Sequence[str]], digests: Sequence[Sequence[str]]
):
    for key, path in values:
        value = param_value(params, key)
        text = value if isinstance(value, str) else json.dumps(value)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    for stage, path in digests:
        if stage not in STAGE_NAMES:
            raise UsageError(
                f"--write-digest {stage}: unknown stage; stages: {', '.join(STAGE_NAMES)}"
            )
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(params_digest(stage_params(stage, params)))


def out_uri(template: str, params: Params) -> str:
    try:
        formatted = template.format(**{name: getattr(params, name) for name in Params.model_fields})
    except (AttributeError, KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"--out {template}: cannot fill it in from the params ({exc})") from exc
    return expand_environment([formatted])[0]


def print_params(args: argparse.Namespace) -> None:
    if args.reference:
        print(params_reference(), end="")
        return
    params = resolve_params(args)
    if args.out:
        target = out_uri(args.out, params)
        uri_io.write_text(target, params_yaml(params), content_type="application/yaml")
        print(f"params: wrote {target}")
    else:
        print(params_yaml(params), end="")
    write_outputs(params, args.write_value, args.write_digest)
