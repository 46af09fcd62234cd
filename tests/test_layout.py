"""The house's floors: methods stand on the core, never on each other; nothing imports upwards."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ahalab"
FLOORS = {
    "ground": {"errors", "logs", "types", "config", "runs", "precision", "plots", "prompts", "args", "stages", "tasks",
               "engines", "models"},
    "core": {"sampling", "training", "rewards", "eval", "stats"},
    "methods": {"scaling", "rl", "sft", "data"},
    "top": {"__main__", "cli", "pipeline", "demo", "report", "distill", "inventory", "view"},
}
LEVEL = {room: i for i, floor in enumerate(FLOORS.values()) for room in floor}


def room(module: str) -> str:
    """ahalab.rl.trainer -> rl; ahalab.cli -> cli."""
    return module.split(".")[1]


def imports() -> list[tuple[str, str]]:
    """(importing file's room, imported ahalab module) for every import in src/, inside functions too."""
    edges = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        importer = ".".join(rel.parts)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] if node.module != "ahalab" else [f"ahalab.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            edges += [(importer, n) for n in names if n.startswith("ahalab.")]
    return edges


def test_every_module_sits_on_a_floor() -> None:
    rooms = {room(".".join(p.relative_to(SRC.parent).with_suffix("").parts)) for p in SRC.rglob("*.py")}
    assert rooms <= set(LEVEL), f"rooms on no floor: {sorted(rooms - set(LEVEL))}"


def test_no_room_imports_a_higher_floor_and_methods_are_siblings() -> None:
    bad = []
    for importer, imported in imports():
        a, b = room(importer), room(imported)
        if a == b:
            continue
        if LEVEL[b] > LEVEL[a]:
            bad.append(f"{importer} ({a}) imports {imported}, a higher floor")
        elif a in FLOORS["methods"] and b in FLOORS["methods"]:
            bad.append(f"{importer} imports {imported}: a method room imports another")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path, monkeypatch) -> None:
    """The walk finds imports inside functions (a test that cannot fail proves nothing)."""
    fake = tmp_path / "ahalab" / "rl"
    fake.mkdir(parents=True)
    (fake / "x.py").write_text("def f():\n    from ahalab.sft.trainer import SFTTrainer\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "ahalab")
    assert imports() == [("ahalab.rl.x", "ahalab.sft.trainer")]


HEAVY = ("torch", "vllm", "transformers", "datasets", "numpy", "math_verify", "accelerate", "peft", "matplotlib",
         "huggingface_hub", "safetensors", "tqdm")


def test_help_imports_no_heavy_library() -> None:
    """``ahalab --help`` (every subcommand's parser built) loads none of the heavy libraries: it answers in well
    under a second (0.2 s here against 2.7-3.9 s when the parsers imported torch)."""
    import subprocess

    code = ("import sys; from ahalab.cli import build_parser; build_parser().format_help(); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"ahalab --help imports {out}"
