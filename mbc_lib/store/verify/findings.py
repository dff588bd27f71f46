"""The findings of ``mbc verify``: one line per problem, each naming where it is in the store."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Findings:
    """Problems found so far, one line each: ``where: problem``."""

    lines: list[str] = field(default_factory=list)

    def add(self, where: str, problem: str) -> None:
        """Record ``problem`` at ``where`` (the empty path is the store itself)."""
        self.lines.append(f"{where or 'store'}: {problem}")


def join(where: str, name: str) -> str:
    """The path of ``name`` inside ``where`` (a path inside the store, "" for its root)."""
    return f"{where}/{name}" if where else name
