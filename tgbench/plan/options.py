"""Options of a config dataclass, read from its code: name, type, default and help.

Each field of a config dataclass (an adapter's `config_class`, `TrainConfig`, `DataConfig`) is an option: its
name, type and default come from the dataclass; its help is `field(metadata={"help": ...})` when given, else
the comment on the field's line, else the comment lines directly above it (a one-line section title such as
``# Memory.`` is not help), else the field's entry in the class docstring's ``Attributes:`` section. Fields
inherited from a base config take their help from the class that declares them.

`tgbench adapters --options NAME` lists an adapter's options this way, and the `tgbench train` flags take their
help and defaults from the same place (`source_options` reads a class from its file without importing it, so
the command line starts without importing torch).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import io
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from pathlib import Path
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
    return _comments_of(source)


def _comments_of(source: str) -> dict[str, str]:
    """Help per annotated field of the class whose source is `source`, from comments (see the module docstring)."""
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


def docstring_attributes(cls: type) -> dict[str, str]:
    """Field -> help from the ``Attributes:`` section of a class docstring (Google style; {} without one)."""
    return _attributes_section(inspect.getdoc(cls) or "")


def _attributes_section(doc: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = doc.splitlines()
    if "Attributes:" not in [line.strip() for line in lines]:
        return out
    start = [line.strip() for line in lines].index("Attributes:") + 1
    current = None
    for line in lines[start:]:
        if not line.strip():
            continue
        if not line.startswith(" "):
            break
        text = line.strip()
        names, colon, rest = text.partition(":")
        if colon and line.startswith("    ") and not line.startswith("     ") and names.replace(", ", ",").replace(
                "_", "").replace(",", "").isalnum():
            current = [n.strip() for n in names.split(",")]
            for name in current:
                out[name] = rest.strip()
        elif current:
            for name in current:
                out[name] = f"{out[name]} {text}".strip()
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
            documented = docstring_attributes(klass)
            comments = field_comments(klass)
            own = {k: comments.get(k) or documented.get(k, "") for k in {*comments, *documented}}
            helps.update({k: v for k, v in own.items() if v or k not in helps})
    options = []
    for field in dataclasses.fields(config_class):
        annotation = hints.get(field.name, field.type)
        help_text = str(field.metadata.get("help", "")) if field.metadata else ""
        options.append(Option(field.name, _type_name(annotation), _default(field), help_text or helps.get(field.name)
                              or COMMON_HELP.get(field.name, "")))
    return options


def source_options(module: str, class_name: str) -> dict[str, Option]:
    """The options of a config dataclass read from its module's source without importing the module.

    Only fields with a literal default are returned (enough for the command line's model flags, whose
    defaults are those of the default adapter's config). Types are shown as written.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return {}
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if node is None:
        return {}
    source = ast.get_source_segment(Path(spec.origin).read_text(encoding="utf-8"), node) or ""
    comments = _comments_of(source)
    documented = _attributes_section(ast.get_docstring(node) or "")
    out = {}
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
            try:
                default = ast.literal_eval(item.value)
            except ValueError:
                continue
            name = item.target.id
            out[name] = Option(name, ast.unparse(item.annotation), default,
                               comments.get(name) or documented.get(name) or COMMON_HELP.get(name, ""))
    return out
