#!/usr/bin/env python3
"""Prints which top-level modules of chat-server use which, and fails on a seam broken.

Reads server/src/**/*.rs, finds every `crate::<module>` path (in `use` lines and in
code, doc comments and string literals left out), and builds the graph between the
top-level modules: a file belongs to the module of its first path component
(`room/rooms.rs` is `room`, `lib.rs` is `lib`, `main.rs` is left out: it is the binary
and uses the library as `chat_server::`). In `lib.rs`, a module's own name
(`broker::start`) counts too, as the crate root needs no `crate::`. Exits non-zero when:

- the graph between modules has a cycle (`lib`, which wires them all, is left out of
  that check, as every module is used by `run`); or
- a module other than `journal` and `broker` names `Journal`, `Publisher` or `Broker`,
  the concrete types behind the `Store` and `Cluster` seams.

Usage: python3 server/module-graph.py [path/to/server/src]
"""

import re
import sys
from pathlib import Path

CONCRETE = ("Journal", "Publisher", "Broker")
OWNERS = {"journal", "broker"}
ROOT = "lib"

# `crate::name` and the names inside `crate::{a, b::c}`.
CRATE_PATH = re.compile(r"\bcrate::(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)")
CONCRETE_NAME = re.compile(r"\b(" + "|".join(CONCRETE) + r")\b")


def code_only(text):
    """The text without comments and string literals, so that prose does not count."""
    out = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif text[i] == "r" and re.match(r'r#*"', text[i:]) and not (
            i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            out.append('""')
        elif text[i] == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            # A char literal (not a lifetime).
            i += len(re.match(r"'(\\.|[^\\'])'", text[i:]).group(0))
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def module_of(path, src):
    parts = path.relative_to(src).parts
    name = parts[0]
    return name[:-3] if name.endswith(".rs") else name


def targets(code):
    for match in CRATE_PATH.finditer(code):
        group = match.group(1)
        if group.startswith("{"):
            for item in group[1:-1].split(","):
                item = item.strip()
                if item:
                    yield re.split(r"\W", item, maxsplit=1)[0]
        else:
            yield group


def find_cycle(graph):
    """One cycle in `graph` as a list of modules, or None."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def main():
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "src"
    files = sorted(path for path in src.rglob("*.rs") if path.name != "main.rs" or path.parent != src)
    if not files:
        print(f"module-graph: no Rust files under {src}", file=sys.stderr)
        return 2
    modules = {module_of(path, src) for path in files}
    graph = {module: set() for module in modules}
    problems = []
    for path in files:
        module = module_of(path, src)
        code = code_only(path.read_text(encoding="utf-8"))
        for target in targets(code):
            if target in modules and target != module:
                graph[module].add(target)
        if module == ROOT:
            # In the crate root, `broker::start` names the module without `crate::`.
            for match in re.finditer(r"(?<![\w:])([a-z_][a-z0-9_]*)::", code):
                if match.group(1) in modules and match.group(1) != ROOT:
                    graph[module].add(match.group(1))
        if module not in OWNERS:
            for line_number, line in enumerate(code.splitlines(), 1):
                for name in CONCRETE_NAME.findall(line):
                    problems.append(
                        f"{path.relative_to(src.parent)}:{line_number}: names {name}, "
                        f"which only {'/'.join(sorted(OWNERS))} may (use the Store and "
                        f"Cluster seams)"
                    )

    print("chat-server modules (module -> the modules it uses):")
    width = max(len(module) for module in graph)
    for module in sorted(graph, key=lambda m: (m != ROOT, m)):
        uses = ", ".join(sorted(graph[module])) or "-"
        print(f"  {module:<{width}} -> {uses}")

    without_root = {m: {t for t in uses if t != ROOT} for m, uses in graph.items() if m != ROOT}
    cycle = find_cycle(without_root)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    for problem in problems:
        print(f"module-graph: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("no cycles; the concrete journal and broker types stay behind their seams")
    return 0


if __name__ == "__main__":
    sys.exit(main())
