"""Recipe runner: a recipe is a list of stages whose configs may name earlier stages' outputs.

    stages:
      - name: zero
        kind: zero
        config: {model: smollm2-135m, steps: 20}
      - name: eval_zero
        kind: eval
        config: {model: "${zero.model}", limit: 200}

Each stage runs in ``<run>/<NN>-<name>/`` (names: letters, digits, underscores). A stage's identity
is a hash of its kind, its config without the settings that cannot change results (``threads``,
checkpoint intervals: the config class's ``NEUTRAL``), the contents of every file or directory its
config names (data files, model directories), the hashes of the stages it reads from, and the
version of ahalab's code. A re-run skips stages whose hash and ``stage.json`` say done, resumes a
stage whose directory exists unfinished (its own checkpoint), and redoes a stage whose inputs
changed: the old directory is moved aside to ``<dir>.old-<time>`` (deleted only with ``force``), so
finished work and paid-for teacher traces are never lost. Stage kinds register with ``ahalab.stages.register_stage``; every
stage's config is built and checked (choices, keys, wiring) before the first stage runs.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ahalab.config import merge, parse_overrides, read_yaml
from ahalab.errors import UserError
from ahalab.runs import atomic_write_json, content_digest
from ahalab.stages import STAGE_KINDS, load_stage_kinds

REF = re.compile(r"\$\{([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\}")
STAGE_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclass
class Stage:
    index: int
    name: str
    kind: str
    config: dict[str, Any]


@dataclass
class PlannedStage:
    stage: Stage
    dir: Path
    hash: str
    config_hash: str  # the hash without the code version (--allow-code-change)
    state: str  # "done" (skip), "resume", "run", "redo"


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[dict[str, Any], list[Stage]]:
    """Parse a recipe; ``overrides`` like ``zero.steps=30`` set a stage's config, ``defaults.x=..`` the defaults."""
    data = read_yaml(path)
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise UserError(f"{path}: a recipe needs a non-empty 'stages' list")
    over = parse_overrides(overrides or [])
    defaults = merge(data.get("defaults") or {}, over.pop("defaults", {}))
    stages, seen = [], set()
    for i, s in enumerate(raw_stages):
        where = f"{path}: stage {i + 1}"
        if not isinstance(s, dict) or "name" not in s or "kind" not in s:
            raise UserError(f"{where}: each stage needs 'name' and 'kind'")
        unknown = set(s) - {"name", "kind", "config"}
        if unknown:
            raise UserError(f"{where} ({s['name']}): unknown key(s) {', '.join(sorted(unknown))}; valid: name, kind, config")
        if not isinstance(s["name"], str) or not STAGE_NAME.fullmatch(s["name"]):
            raise UserError(f"{where}: stage name {s['name']!r} must be letters, digits and underscores only "
                            "(it names a folder inside the run directory and is what ${name.output} refers to)")
        if s["name"] in seen:
            raise UserError(f"{where}: duplicate stage name '{s['name']}'")
        seen.add(s["name"])
        cfg = merge(merge(defaults, s.get("config") or {}), over.pop(s["name"], {}))
        stages.append(Stage(i, str(s["name"]), str(s["kind"]), cfg))
    if over:
        raise UserError(f"override(s) for unknown stage(s): {', '.join(over)}; stages: {', '.join(seen)}")
    return data, stages


def check_wiring(stages: list[Stage], path: str | Path = "recipe") -> None:
    """Every stage kind exists, every config key is one its kind knows, and every ${stage.output} names an
    earlier stage's declared output."""
    load_stage_kinds()
    produced: dict[str, tuple[str, ...]] = {}
    for st in stages:
        if st.kind not in STAGE_KINDS:
            raise UserError(f"{path}: stage '{st.name}': unknown kind '{st.kind}'; "
                            f"valid kinds: {', '.join(sorted(STAGE_KINDS))}")
        keys = STAGE_KINDS[st.kind].config_keys(st.config)
        unknown = sorted(set(st.config) - keys) if keys is not None else []
        if unknown:
            raise UserError(f"{path}: stage '{st.name}' ({st.kind}): unknown config key(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(sorted(keys))}")
        for key, src, out in refs(st.config):
            if src not in produced:
                later = " (it runs later)" if any(s.name == src for s in stages) else ""
                raise UserError(f"{path}: stage '{st.name}', config '{key}': refers to ${{{src}.{out}}} but no "
                                f"earlier stage is named '{src}'{later}")
            if out not in produced[src]:
                raise UserError(f"{path}: stage '{st.name}', config '{key}': stage '{src}' has no output '{out}'; "
                                f"its outputs: {', '.join(produced[src])}")
        produced[st.name] = STAGE_KINDS[st.kind].outputs
        placeholders = {name: {out: f"<{name}.{out}>" for out in outs} for name, outs in produced.items()}
        STAGE_KINDS[st.kind].build_config(substitute(st.config, placeholders), Path(st.name))  # choices, types


def refs(config: Any, key: str = "") -> list[tuple[str, str, str]]:
    """(config key, stage, output) for every ${stage.output} in a config."""
    if isinstance(config, dict):
        return [r for k, v in config.items() for r in refs(v, f"{key}.{k}" if key else k)]
    if isinstance(config, list):
        return [r for i, v in enumerate(config) for r in refs(v, f"{key}[{i}]")]
    if isinstance(config, str):
        return [(key, m.group(1), m.group(2)) for m in REF.finditer(config)]
    return []


def substitute(config: Any, values: dict[str, dict[str, Any]]) -> Any:
    """Replace ${stage.output} references with the values those stages produced (or their hashes)."""
    if isinstance(config, dict):
        return {k: substitute(v, values) for k, v in config.items()}
    if isinstance(config, list):
        return [substitute(v, values) for v in config]
    if isinstance(config, str):
        whole = REF.fullmatch(config)
        if whole:
            return values[whole.group(1)][whole.group(2)]
        return REF.sub(lambda m: str(values[m.group(1)][m.group(2)]), config)
    return config


def input_digests(config: Any) -> dict[str, str]:
    """Content digests of every existing file or directory a config's strings name (references excluded)."""
    found: dict[str, str] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and not REF.search(value) and value and len(value) < 4096:
            path = Path(value)
            if path.exists() and value not in found:
                found[value] = content_digest(path)

    walk(config)
    return found


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A digest of ahalab's source: a new code version makes finished stages stale."""
    return content_digest(Path(__file__).resolve().parent)[:16]


def stage_hash(stage: Stage, upstream: dict[str, tuple[str, str]], code: bool = True) -> str:
    """Hash of kind + result-changing config + its input files' contents + upstream hashes + code version
    (``code=False``: without it, upstream hashes taken the same way)."""
    kind = STAGE_KINDS[stage.kind]
    cls = kind.config_class(stage.config)
    neutral = getattr(cls, "NEUTRAL", frozenset())
    config = {k: v for k, v in stage.config.items() if k not in neutral}
    ids = {name: {out: f"<{h}:{out}>" for out in STAGE_KINDS[k].outputs} for name, (h, k) in upstream.items()}
    blob = json.dumps({"kind": stage.kind, "config": substitute(config, ids), "inputs": input_digests(config),
                       **({"code": code_version()} if code else {})}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan(stages: list[Stage], run_dir: Path, allow_code_change: bool = False) -> list[PlannedStage]:
    """Each stage's directory, hash and state. ``allow_code_change``: a stage whose config and inputs are
    unchanged keeps its finished (or checkpointed) work although ahalab's code changed since."""
    upstream: dict[str, tuple[str, str]] = {}
    upstream_config: dict[str, tuple[str, str]] = {}
    out: list[PlannedStage] = []
    for st in stages:
        h, hc = stage_hash(st, upstream), stage_hash(st, upstream_config, code=False)
        upstream[st.name], upstream_config[st.name] = (h, st.kind), (hc, st.kind)
        d = run_dir / f"{st.index + 1:02d}-{st.name}"
        meta = _read_meta(d)
        same = meta is not None and (meta.get("hash") == h or allow_code_change and meta.get("config_hash") == hc)
        if same and meta.get("status") == "done":
            state = "done"
        elif same:
            state = "resume"
        elif d.exists():
            state = "redo"
        else:
            state = "run"
        out.append(PlannedStage(st, d, h, hc, state))
    return out


def stage_dirs(run_dir: Path) -> list[Path]:
    """The stage directories of a recipe run, in order (directories moved aside are not among them)."""
    return [d for d in sorted(run_dir.iterdir()) if (d / "stage.json").is_file() and ".old-" not in d.name]


def _read_meta(d: Path) -> dict[str, Any] | None:
    f = d / "stage.json"
    try:
        return json.loads(f.read_text()) if f.exists() else None
    except json.JSONDecodeError:
        return None


def move_aside(d: Path, force: bool) -> str:
    """Clear a stage directory whose inputs changed: moved to ``<dir>.old-<time>``, or with ``force`` deleted."""
    if force:
        shutil.rmtree(d)
        return "deleted"
    aside = d.with_name(f"{d.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    while aside.exists():
        aside = aside.with_name(aside.name + "x")
    d.rename(aside)
    return f"moved aside to {aside}"


def run_recipe(path: str | Path, run_dir: str | Path, overrides: list[str] | None = None,
               dry_run: bool = False, log: Callable[[str], None] = print,
               force: bool = False, allow_code_change: bool = False,
               until: str | None = None) -> dict[str, dict[str, Any]]:
    """Run (or with ``dry_run`` only print the plan of) a recipe; returns each stage's outputs.

    A stage to redo has its old directory moved aside; ``force`` deletes it instead. ``allow_code_change``: see
    ``plan``. ``until``: stop after the stage of that name (the later ones are planned, not run)."""
    _, stages = load_recipe(path, overrides)
    check_wiring(stages, path)
    names = [st.name for st in stages]
    if until is not None and until not in names:
        raise UserError(f"{path}: --until names no stage '{until}'; its stages: {', '.join(names)}")
    last = names.index(until) if until is not None else len(stages) - 1
    run_dir = Path(run_dir)
    planned = plan(stages, run_dir, allow_code_change)
    for p in planned:
        reads = sorted({f"{s}.{o}" for _, s, o in refs(p.stage.config)})
        state = p.state if p.stage.index <= last else f"{p.state} (after --until {until}: not run now)"
        log(f"[{p.stage.index + 1}/{len(planned)}] {p.stage.name} ({p.stage.kind}) -> {p.dir}: {state}"
            + (f"; reads {', '.join(reads)}" if reads else ""))
    if dry_run:
        return {}
    values: dict[str, dict[str, Any]] = {}
    for p in planned[:last + 1]:
        meta = _read_meta(p.dir)
        if p.state == "done" and meta is not None:
            values[p.stage.name] = meta["outputs"]
            continue
        if p.state == "redo":
            log(f"== stage {p.stage.name}: inputs changed; the old directory was {move_aside(p.dir, force)}")
        p.dir.mkdir(parents=True, exist_ok=True)
        config = substitute(p.stage.config, values)
        meta = {"name": p.stage.name, "kind": p.stage.kind, "hash": p.hash, "config_hash": p.config_hash,
                "code_version": code_version(), "config": config,
                "reads": sorted({s for _, s, _ in refs(p.stage.config)})}
        atomic_write_json(p.dir / "stage.json", {**meta, "status": "running"})
        log(f"== stage {p.stage.name} ({p.stage.kind})")
        t = time.perf_counter()
        kind = STAGE_KINDS[p.stage.kind]
        try:
            outputs = kind.run(kind.build_config(config, p.dir), p.dir, p.state == "resume")
        except Exception as e:  # recorded for `ahalab runs`; a kill leaves "running"
            atomic_write_json(p.dir / "stage.json", {**meta, "status": "failed", "error": f"{type(e).__name__}: {e}"})
            raise
        missing = set(kind.outputs) - set(outputs)
        if missing:
            raise RuntimeError(f"stage kind '{p.stage.kind}' did not produce {', '.join(sorted(missing))}")
        atomic_write_json(p.dir / "stage.json", {**meta, "status": "done", "outputs": outputs,
                                                 "wall_s": round(time.perf_counter() - t, 2)})
        values[p.stage.name] = outputs
    return values


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run a multi-stage recipe (R1, distillation, ...) with skip and resume",
                       description="Run the stages of a YAML recipe in order. Each stage writes RUN_DIR/NN-name/; a "
                       "re-run skips stages whose config and inputs are unchanged (content hash), resumes an "
                       "interrupted stage from its checkpoint, and redoes stages whose inputs changed (their old "
                       "directories moved aside, never deleted unless --force). "
                       "Overrides: STAGE.key=value for one stage, defaults.key=value for all.")
    p.add_argument("recipe", help="recipe YAML (e.g. recipes/r1.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--out", help="run directory (default runs/<recipe name>)")
    p.add_argument("--dry-run", action="store_true", help="check the wiring and print the plan; run nothing")
    p.add_argument("--force", action="store_true", help="delete the directories of stages to redo (default: "
                   "move them aside to <dir>.old-<time>)")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage (a later run of the whole recipe skips the "
                   "stages done so far)")
    p.add_argument("--allow-code-change", action="store_true", help="keep finished and checkpointed stages whose "
                   "config and inputs are unchanged although ahalab's code changed since (default: a new code "
                   "version redoes every stage)")
    p.set_defaults(func=_run)


def _run(args: Any) -> int:
    from ahalab.training.distributed import launched_world

    if launched_world() > 1:
        raise UserError("run a recipe in one process (not under accelerate launch or torchrun): a training stage with "
                        "num_processes: N launches its own N processes")
    out = args.out or str(Path("runs") / Path(args.recipe).stem)
    run_recipe(args.recipe, out, args.overrides, dry_run=args.dry_run, force=args.force,
               allow_code_change=args.allow_code_change, until=args.until)
    if not args.dry_run:
        print(f"recipe done{f' up to {args.until}' if args.until else ''}; run directory: {out}")
    return 0
