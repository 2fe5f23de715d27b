"""A command line built from a recipe's config dataclass: the comment on each field is its help.

A recipe declares its settings once, as a dataclass whose fields carry their units in a
trailing comment (`lr: float = 0.1  # learning rate before the first drop`). `parse_config`
turns every field into an option and every comment into that option's `--help` text, so the
units written in the source show on the command line. Fields inherited from a base config
(`modelsurgery.recipes_kit.recipe.RecipeConfig`) keep the comments written in the base; a subclass
that redeclares a field replaces both its default and its comment.

Example:
    >>> cfg = parse_config(Config, ["--epochs", "3", "--data", "fixture"])
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from collections.abc import Sequence

__all__ = ["parse_config"]


def _field_comments(cls: type) -> dict[str, str]:
    """`name: type = default  # comment` lines of a dataclass and its bases: the comment is the help."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):   # bases first, so a subclass's own comment wins
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            match = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
            if match:
                comments[match.group(1)] = match.group(2).strip()
    return comments


def _parser_type(annotation: str):
    kind = annotation.replace("| None", "").replace("Optional[", "").strip(" ]")
    if kind.startswith("tuple"):
        inner = float if "float" in kind else int if "int" in kind else str
        return lambda text: tuple(inner(v) for v in text.split(",") if v.strip())
    return {"int": int, "float": float, "str": str}.get(kind, str)


def parse_config(cls: type, argv: Sequence[str] | None = None, description: str | None = None):
    """Build a `cls` instance (a recipe's config dataclass) from the command line.

    Every field becomes `--field-name`; its help text is the comment on the field's line, so
    the units written there show in `--help`. Booleans are flags (`--x` / `--no-x`), tuples
    take comma-separated values (`--milestones 6,8`), and `X | None` fields accept `none`.

    Example:
        >>> cfg = parse_config(Config, ["--epochs", "3", "--data", "fixture"])
    """
    comments = _field_comments(cls)
    parser = argparse.ArgumentParser(description=description or (cls.__doc__ or "").strip())
    for f in dataclasses.fields(cls):
        flag, annotation = "--" + f.name.replace("_", "-"), str(f.type)
        help_text = comments.get(f.name, "")
        if f.default not in (None, False) and "default" not in help_text:
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            help_text += f" (default: {shown})"
        if annotation == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
            continue
        convert = _parser_type(annotation)
        if "None" in annotation:
            convert = (lambda c: lambda text: None if text.lower() == "none" else c(text))(convert)
        parser.add_argument(flag, dest=f.name, type=convert, default=f.default, help=help_text,
                            metavar=f.name.upper())
    return cls(**vars(parser.parse_args(argv)))
