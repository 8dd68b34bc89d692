"""Reading Nextflow sources without Nextflow: processes, includes, profiles, ext.args.

Small, strict regex readers for the shapes this repository writes (nf-core style); a
source they cannot read makes a test fail, never pass silently.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESOURCE_LABELS = ("process_single", "process_low", "process_medium", "process_high")
GPU_LABEL = "process_gpu"


def block(text: str, start: int) -> str:
    """The text inside the braces whose opening brace is at or after ``start``."""
    open_at = text.index("{", start)
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i]
    raise ValueError(f"unbalanced braces after offset {start}")


def section(body: str, name: str, names=("input", "output", "when", "script", "stub")) -> str:
    """A process section (``input:`` ... up to the next section label)."""
    m = re.search(rf"^\s*{name}:\s*$", body, re.M)
    if not m:
        return ""
    nxt = [mm.start() for other in names if other != name
           for mm in [re.search(rf"^\s*{other}:\s*$", body[m.end():], re.M)] if mm]
    return body[m.end(): m.end() + min(nxt)] if nxt else body[m.end():]


@dataclass
class Process:
    name: str
    file: Path
    body: str

    @property
    def tag(self) -> str | None:
        m = re.search(r"^\s*tag\s+(.+)$", self.body, re.M)
        return m.group(1).strip() if m else None

    @property
    def labels(self) -> list[str]:
        return re.findall(r"^\s*label\s+'([^']+)'", self.body, re.M)

    @property
    def outputs(self) -> dict[str, str]:
        """emit name -> the first path(...) pattern of that output line."""
        out = {}
        for line in section(self.body, "output").splitlines():
            m = re.search(r"emit:\s*(\w+)", line)
            p = re.search(r"path\((['\"])(.+?)\1\)", line)
            if m and p:
                out[m.group(1)] = p.group(2)
        return out

    @property
    def input_paths(self) -> list[str]:
        return re.findall(r"path\((\w+)", section(self.body, "input"))

    def script(self, name: str = "script") -> str:
        """The shell text of the script (or stub) section's last triple-quoted string."""
        parts = re.findall(r'"""(.*?)"""', section(self.body, name), re.S)
        return parts[-1] if parts else ""

    def script_block(self) -> str:
        """The whole script section: Groovy lines and the shell string."""
        return section(self.body, "script")

    def medflow_commands(self) -> list[str]:
        """Each `medflow...` command line of the script, continuation lines joined."""
        text = self.script().replace("\\\\\n", " ")
        return [line.strip() for line in text.splitlines()
                if re.match(r"\s*medflow[\w-]*\s", line)]


def processes(path: Path) -> dict[str, Process]:
    text = path.read_text()
    return {m.group(1): Process(m.group(1), path, block(text, m.end()))
            for m in re.finditer(r"^process\s+(\w+)\s*(?=\{)", text, re.M)}


def module_files() -> list[Path]:
    return sorted((ROOT / "modules").rglob("main.nf"))


def all_processes() -> dict[str, Process]:
    found = {}
    for path in module_files():
        found.update(processes(path))
    return found


def includes(path: Path = ROOT / "main.nf") -> list[tuple[str, str, Path]]:
    """(process, name used in the workflow, module file) for every include."""
    found = []
    for m in re.finditer(r"^include\s*\{([^}]*)\}\s*from\s*'([^']+)'", path.read_text(), re.M):
        target = (path.parent / m.group(2)).resolve()
        target = target if target.suffix == ".nf" else target.with_name(target.name + ".nf")
        for item in m.group(1).split(";"):
            words = item.split()
            if words:
                found.append((words[0], words[-1], target))
    return found


def profiles(path: Path = ROOT / "nextflow.config") -> list[str]:
    text = path.read_text()
    body = block(text, re.search(r"^profiles\s*\{", text, re.M).start())
    names, depth, i = [], 0, 0
    for m in re.finditer(r"(\w+)\s*\{|\{|\}", body):
        if m.group(0) == "}":
            depth -= 1
        else:
            if depth == 0 and m.group(1):
                names.append(m.group(1))
            depth += 1
    return names


def with_name(name: str, path: Path = ROOT / "conf" / "modules.config") -> str:
    """The body of ``withName: 'NAME' { ... }`` in a config file."""
    text = path.read_text()
    m = re.search(rf"withName:\s*'{re.escape(name)}'\s*\{{", text)
    if not m:
        raise KeyError(f"no withName: '{name}' in {path}")
    return block(text, m.start())


def ext_args(name: str) -> dict[str, str]:
    """ext.args of a process per kind of role: a plain string gives {"image": s}; the
    closure ``{ meta.kind == 'label' ? 'A' : 'B' }`` gives {"label": A, "image": B}."""
    body = with_name(name)
    m = re.search(r"^\s*ext\.args\s*=\s*(.+)$", body, re.M)
    if not m:
        return {}
    value = m.group(1).strip()
    plain = re.fullmatch(r"'([^']*)'", value)
    if plain:
        return {"image": plain.group(1)}
    kinds = re.fullmatch(r"\{\s*meta\.kind\s*==\s*'label'\s*\?\s*'([^']*)'\s*:\s*'([^']*)'\s*\}",
                         value)
    if kinds:
        return {"label": kinds.group(1), "image": kinds.group(2)}
    raise ValueError(f"ext.args of {name} has a shape the tests cannot read: {value}")


def publish_path(name: str) -> str:
    m = re.search(r"path:\s*\{\s*\"([^\"]+)\"\s*\}", with_name(name))
    if not m:
        raise ValueError(f"no publishDir path closure for {name}")
    return m.group(1)


def split(command: str) -> list[str]:
    return shlex.split(command)
