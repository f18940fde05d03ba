"""A griffe extension for the API reference: the docstrings' `Example:` sections, as written.

The project writes examples as a section header followed by a blank line and doctest lines at
the docstring's own indentation (the form `python -m doctest` and pytest read):

    Example:

    >>> model = ViT("mu/4", image_size=16, num_classes=10)

griffe's Google-style parser only takes a section whose body is indented under its header, so
it would pass these lines to Markdown as text (`>>>` reads as nested quotes, `x[0]` as a link
reference). This indents each such body under its header before griffe parses it; the source
stays as it is.
"""

import re

import griffe

_HEADER = re.compile(r"^(Examples?):\s*$")
_NEXT_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")


def indent_examples(text):
    """`text` (a cleaned docstring) with every unindented `Example:` body indented under it."""
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        if _HEADER.match(lines[i]):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and lines[j].startswith(">>>"):
                i += 1
                while i < len(lines) and not _NEXT_SECTION.match(lines[i]):
                    out.append("    " + lines[i] if lines[i].strip() else "")
                    i += 1
                continue
        i += 1
    return "\n".join(out)


class IndentedExamples(griffe.Extension):
    """Applies `indent_examples` to every docstring griffe loads."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = indent_examples(obj.docstring.value)
