"""Safe text for the files djdeploy generates (gunicorn.conf.py, systemd units).

Generated files are executed (the Gunicorn config is Python) or parsed line by line
(systemd), so a value must never be able to end its literal or its comment line and
start a statement of its own. These two functions are the only way values and reasons
get into those files.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import math
import re

__all__ = ["COMMENT_MAX_LENGTH", "MAX_NESTING", "comment_text", "python_literal"]

# Deep enough for any settings structure; shallow enough to stop a self-referencing list.
MAX_NESTING = 50
COMMENT_MAX_LENGTH = 200

# PEP 263: a comment like "coding: utf-7" on line 1 or 2 of a Python file changes how the
# rest of the file is decoded, and some codecs can turn harmless bytes into a newline.
_CODING_DECLARATION = re.compile(r"coding([:=])", re.IGNORECASE)


def python_literal(value: object) -> str:
    """Render ``value`` as Python source that ``ast.literal_eval`` turns back into an equal value.

    Only str, int, float (finite), bool, None and lists, tuples and dicts of those are
    accepted; anything else raises TypeError, because an object's own ``repr`` could
    produce code. Strings are rendered ASCII-only so the file's encoding and invisible
    characters (bidi overrides) cannot change what a reader sees.
    """
    return _render(value, depth=0)


def comment_text(text: str, *, max_length: int = COMMENT_MAX_LENGTH) -> str:
    """Make ``text`` safe to follow "# " on one line of a Python or systemd file.

    Line breaks and other control or invisible characters become spaces or "?", so the
    comment cannot end early; the length is capped so a runaway reason stays one line.
    """
    if not isinstance(text, str):
        raise TypeError(f"comment_text takes str, got {type(text).__name__}")
    cleaned = "".join(_printable(char) for char in str.__str__(text))
    cleaned = _CODING_DECLARATION.sub(r"coding \1", cleaned)
    if len(cleaned) > max_length:
        cleaned = cleaned[: max(max_length - 3, 0)] + "..."
    # systemd joins a line ending in a backslash with the next one; never end on one.
    return cleaned.rstrip().rstrip("\\").rstrip()


def _printable(char: str) -> str:
    if char.isprintable():
        return char
    return " " if char.isspace() else "?"


def _render(value: object, *, depth: int) -> str:
    if depth > MAX_NESTING:
        raise ValueError(f"value nested deeper than {MAX_NESTING} levels (a list containing itself?)")
    # bool before int: bool is an int subclass, and True must stay True.
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return _render_int(value)
    if isinstance(value, float):
        return _render_float(value)
    if isinstance(value, str):
        # str.__str__ drops any subclass, so a subclass's own __repr__ is never consulted.
        return ascii(str.__str__(value))
    if isinstance(value, (list, tuple, dict)):
        return _render_container(value, depth=depth)
    raise TypeError(
        f"cannot render {type(value).__name__} as a Python literal; "
        "only str, int, float, bool, None, list, tuple and dict are allowed"
    )


def _render_int(value: int) -> str:
    try:
        return int.__repr__(value)
    except ValueError as error:  # more digits than sys.get_int_max_str_digits()
        raise ValueError(f"integer too large to render: {error}") from None


def _render_float(value: float) -> str:
    if not math.isfinite(value):
        # repr would give "inf"/"nan": names, not literals, and not round-trippable.
        raise ValueError(f"cannot render non-finite float {value!r} as a Python literal")
    return float.__repr__(value)


def _render_container(value: list[object] | tuple[object, ...] | dict[object, object], *, depth: int) -> str:
    inner = depth + 1
    if isinstance(value, dict):
        # Indexing resolves the values of the containers Ansible hands filters; whatever comes
        # back is checked by type like any value.
        items = (f"{_render(key, depth=inner)}: {_render(value[key], depth=inner)}" for key in dict.keys(value))
        return "{" + ", ".join(items) + "}"
    rendered = [_render(item, depth=inner) for item in value]
    if isinstance(value, list):
        return "[" + ", ".join(rendered) + "]"
    if len(rendered) == 1:
        return f"({rendered[0]},)"  # without the comma "(x)" is just x in parentheses
    return "(" + ", ".join(rendered) + ")"
