"""Which shared Lua helpers a script is loaded with: only those it uses.

The helpers live in lua/lib/*.lua, one file per concern, read in the order of LIB. Each
top-level `local` definition there (a function, or constants) is one helper, with the comment
above it. A script's prelude is every helper its body names, and every helper those name, in
LIB order; a helper may name only helpers defined before it (checked here, when the sources are
read), so the prelude never calls a name it has not defined yet. Helpers are defined again on
every call (a script is a function body), so a small script that names none pays for none:
bench/prelude.py measures what each script's prelude costs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

LIB: tuple[str, ...] = ("base", "hearing", "indexes", "control", "leases", "matching", "waiting")

_DEFINITION = re.compile(r"^local (?:function ([A-Za-z_]\w*)|([A-Za-z_][\w, ]*?)\s*=)")
_NAME = re.compile(r"[A-Za-z_]\w*")
_COMMENT = re.compile(r"--.*$", re.M)


@dataclasses.dataclass(frozen=True)
class Helper:
    names: tuple[str, ...]  # what it defines
    text: str  # its source, with the comment above it
    uses: frozenset[str]  # the names of other helpers it calls or reads


def _names_in(code: str) -> set[str]:
    return set(_NAME.findall(_COMMENT.sub("", code)))


def helpers(sources: Sequence[str]) -> list[Helper]:
    """The helpers of the lib sources, in order; ValueError if one uses a helper defined later
    (or twice)."""
    lines = "\n".join(sources).splitlines()
    starts: list[tuple[int, tuple[str, ...]]] = []
    for i, line in enumerate(lines):
        found = _DEFINITION.match(line)
        if found:
            names = (found[1],) if found[1] else tuple(n.strip() for n in found[2].split(","))
            first = i
            while first > 0 and lines[first - 1].startswith("--"):
                first -= 1
            starts.append((first, names))
    out: list[Helper] = []
    defined: set[str] = set()
    every = {n for _, names in starts for n in names}
    for k, (first, names) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(lines)
        text = "\n".join(lines[first:end]).rstrip() + "\n"
        uses = frozenset((_names_in(text) & every) - set(names))
        if uses - defined:
            raise ValueError(f"lua helper {names[0]} uses {sorted(uses - defined)} before they are defined")
        if defined & set(names):
            raise ValueError(f"lua helpers {sorted(defined & set(names))} are defined twice")
        defined.update(names)
        out.append(Helper(names, text, uses))
    return out


def prelude(lib: Sequence[Helper], body: str) -> str:
    """The helpers `body` needs, in definition order."""
    by_name = {n: h for h in lib for n in h.names}
    wanted = _names_in(body) & set(by_name)
    needed: set[int] = set()
    while wanted:
        helper = by_name[wanted.pop()]
        if id(helper) not in needed:
            needed.add(id(helper))
            wanted |= helper.uses
    return "".join(h.text for h in lib if id(h) in needed)
