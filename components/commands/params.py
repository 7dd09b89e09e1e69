"""``solarpipe params``: print the effective params (file + ``--set``) or the params reference."""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterator

import yaml
from pydantic import BaseModel

from components.core.params import Params, load_params
from components.core.stage import add_common_options


def configure(parser: argparse.ArgumentParser) -> None:
    add_common_options(parser)
    parser.add_argument(
        "--reference",
        action="store_true",
        help="print the markdown reference of every param instead",
    )
    parser.set_defaults(handler=print_params)


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
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
    return len(annotations) == 1 and len(model.model_fields) > 2


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


def print_params(args: argparse.Namespace) -> None:
    if args.reference:
        print(params_reference(), end="")
        return
    params = load_params(args.params, args.overrides)
    print(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), end="")
