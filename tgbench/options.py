"""An adapter's options (`tgbench adapters --options NAME`), read from its config dataclass.

Each field of `config_class` is an option: its name, type and default come from the dataclass; its help is
`field(metadata={"help": ...})` when given, else the comment on the field's line, else the comment lines
directly above it (a one-line section title such as ``# Loss.`` is not help). Fields inherited from a base
config take their help from the class that declares them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    """One adapter option.

    Attributes:
        name: The field name (`--set NAME=VALUE`, a grid's `options = {NAME = ...}`).
        type: The annotation as written (``int``, ``int | str``, ...).
        default: The default value (None when the field has none).
        help: What it does, from the field's metadata or comments ("" when neither says).
    """

    name: str
    type: str
    default: Any
    help: str


# Fields every adapter's config has (the harness sets them from a grid's widths, layers and head_dim).
COMMON_HELP = {"width": "model width d (a grid sets it from widths)",
               "layers": "number of blocks (a grid sets it from layers)"}


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def _is_title(comment: str) -> bool:
    """A section title over a group of fields (``# Memory.``, ``# Loss.``) rather than a field's help."""
    words = comment.split()
    return 0 < len(words) <= 6 and comment.endswith(".") and "=" not in comment and ":" not in comment


def field_comments(cls: type) -> dict[str, str]:
    """Help text per field declared in `cls`'s own body, from comments ({} when its source is unavailable)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}  # line number -> comment text
    code_lines: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                comments[token.start[0]] = token.string.lstrip("#").strip()
            elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                    tokenize.ENDMARKER):
                code_lines.add(token.start[0])
        tree = ast.parse(source)
    except (SyntaxError, tokenize.TokenError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        trailing = comments.get(node.end_lineno or node.lineno) if (node.end_lineno or node.lineno) in code_lines \
            else None
        if trailing:
            out[node.target.id] = trailing
            continue
        above, line = [], node.lineno - 1
        while line in comments and line not in code_lines:  # whole-line comments directly above
            above.insert(0, comments[line])
            line -= 1
        above = [text for text in above if not _is_title(text)]
        out[node.target.id] = " ".join(above)
    return out


def config_options(config_class: type) -> list[Option]:
    """Every field of a config dataclass as an `Option`, in declaration order."""
    if not dataclasses.is_dataclass(config_class):
        return []
    try:
        hints = typing.get_type_hints(config_class)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved is shown as written
        hints = {}
    helps: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):  # a subclass's comment on a field it redeclares wins
        if dataclasses.is_dataclass(klass):
            helps.update({k: v for k, v in field_comments(klass).items() if v or k not in helps})
    options = []
    for field in dataclasses.fields(config_class):
        annotation = hints.get(field.name, field.type)
        help_text = str(field.metadata.get("help", "")) if field.metadata else ""
        options.append(Option(field.name, _type_name(annotation), _default(field), help_text or helps.get(field.name)
                              or COMMON_HELP.get(field.name, "")))
    return options


def adapter_options(name: str) -> tuple[type, list[Option]]:
    """The adapter class a name or reference resolves to, and its options."""
    from tgbench.registry import get_adapter_class

    cls = get_adapter_class(name)
    return cls, config_options(getattr(cls, "config_class", None))
