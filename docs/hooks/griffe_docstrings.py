"""Griffe extension (loaded by mkdocstrings): reads the project's docstrings as written.

* ``Example:`` (singular, the project's habit) becomes ``Examples:``, the section Griffe's
  Google parser renders as doctest code; otherwise the ``>>>`` lines would be read as
  Markdown block quotes and their output as links.
* Sphinx roles (``:func:`fit```, ``:func:`~grnn_jax.em.fit```) lose the role (and the ``~``) and
  keep the code, which Markdown shows as is.
* An argument entry that names several parameters (``tol, reg_covar: as in fit``) becomes one
  entry per parameter with the same text, so Griffe can still check every documented name
  against the signature.
"""

from __future__ import annotations

import re

import griffe

EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|obj|exc|const):`~?([^`]+)`")
ARGS = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Other Args):\s*$")
GROUP = re.compile(r"^(\s+)(\*{0,2}\w+(?:,\s*\*{0,2}\w+)+)(\s*(?:\([^)]*\))?:.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def split_grouped_args(text: str) -> str:
    """``a, b: text`` in an arguments section -> ``a: text`` and ``b: text``."""
    lines, out, i = text.split("\n"), [], 0
    section_indent = None
    while i < len(lines):
        line = lines[i]
        head = ARGS.match(line)
        if head:
            section_indent = len(head.group(1))
        elif line.strip() and section_indent is not None and _indent(line) <= section_indent:
            section_indent = None
        match = GROUP.match(line) if section_indent is not None else None
        if match is None:
            out.append(line)
            i += 1
            continue
        item = len(match.group(1))
        j = i + 1
        while j < len(lines) and lines[j].strip() and _indent(lines[j]) > item:
            j += 1
        for name in re.split(r",\s*", match.group(2)):
            out += [match.group(1) + name + match.group(3), *lines[i + 1 : j]]
        i = j
    return "\n".join(out)


class ProjectDocstrings(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        doc = obj.docstring
        if doc is None:
            return
        text = ROLE.sub(r"`\1`", EXAMPLE.sub(r"\1Examples:", doc.value))
        doc.value = split_grouped_args(text)
