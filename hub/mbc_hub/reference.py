"""The settings reference of docs/hub.md, made from the traits themselves.

    python -m mbc_hub.reference              # print it
    python -m mbc_hub.reference --write docs/hub.md   # replace it between the markers

A test keeps docs/hub.md equal to what this prints, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from traitlets import TraitType
from traitlets.config import Configurable

from .config import mbc_classes
from .platform import ENV_OVERRIDES, MBC_DEFAULTS

BEGIN = "<!-- settings reference: begin (python -m mbc_hub.reference --write docs/hub.md) -->"
END = "<!-- settings reference: end -->"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(trait: TraitType) -> str:
    value = trait.default()
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        names = ", ".join(str(v.get("name")) for v in value)
        return f"{len(value)} profiles: {names} (hub/platform.example.yaml)"
    if isinstance(value, set | frozenset):
        value = sorted(value)
    return f"`{value!r}`" if value != "" else "`''`"


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    doc = re.sub(r":\w+:`~?([\w.]+)`", lambda m: "`" + m.group(1).split(".")[-1] + "`", doc)
    return " ".join(doc.split("\n\n")[0].split()).replace("``", "`")


def class_section(cls: type[Configurable]) -> list[str]:
    traits = cls.class_own_traits(config=True)
    if not traits:
        return []
    lines = [f"### {cls.__name__}", "", _summary(cls), ""]
    lines += ["| setting | takes | default | what it does |", "|---|---|---|---|"]
    for name in sorted(traits):
        trait = traits[name]
        lines.append(
            f"| `{cls.__name__}.{name}` | {_cell(trait.info())} | {_cell(_default(trait))} | "
            f"{_cell(trait.help)} |"
        )
    return [*lines, ""]


def _value(value: Any) -> str:
    if isinstance(value, set | frozenset):
        value = sorted(value)
    return f"`{value!r}`"


def render() -> str:
    """The reference: mbc's settings by class, mbc's defaults for JupyterHub's own settings,
    and the environment overrides."""
    lines = [BEGIN, ""]
    for cls in mbc_classes():
        lines += class_section(cls)
    lines += [
        "### mbc's defaults for JupyterHub's own settings",
        "",
        "Each is set on the class that defines it, so a value for that class (or a subclass) "
        "in the platform file wins. `{data_dir}` stands for `MbcPlatform.data_dir`.",
        "",
        "| setting | mbc's default |",
        "|---|---|",
    ]
    for section, settings in MBC_DEFAULTS.items():
        for key, value in settings.items():
            lines.append(f"| `{section}.{key}` | {_cell(_value(value))} |")
    lines += [
        "",
        "### Environment overrides",
        "",
        "These, and no other variables, override the platform file (OAuthenticator reads its "
        "own as well: `OAUTH_CLIENT_ID`, `OAUTH_CLIENT_SECRET`, `OAUTH_CALLBACK_URL`, ...).",
        "",
        "| variable | sets |",
        "|---|---|",
    ]
    for var, (section, key) in ENV_OVERRIDES.items():
        lines.append(f"| `{var}` | `{section}.{key}` |")
    return "\n".join([*lines, "", END]) + "\n"


def embedded(text: str) -> str:
    """The reference as ``text`` (docs/hub.md) holds it, markers included."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError("no settings reference markers found")
    return text[start : end + len(END)] + "\n"


def write(path: Path) -> None:
    text = path.read_text()
    old = embedded(text)
    path.write_text(text.replace(old, render()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mbc_hub.reference", description=__doc__)
    parser.add_argument("--write", type=Path, help="replace the reference in this Markdown file")
    args = parser.parse_args(argv)
    if args.write:
        write(args.write)
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
