"""Build an SFT dataset: problems -> decontaminate -> teacher traces -> verify/filter (or journey pairs) -> files.

Decontamination runs on the problems before any teacher is asked (the same rows are removed as
after generation, and no teacher call is wasted on them). Outputs in the dataset directory:

    traces.jsonl            the teacher cache (resumable; absent for the search journeys)
    train.jsonl             verified, filtered traces           (journey: none)
    journey.jsonl           journey traces                      (journey: samples | search)
    shortcut.jsonl          their shortcut counterparts, same problems, same count
    shortcut_tokens.jsonl   shortcut traces of more problems, as many assistant tokens as journey.jsonl
    decontamination.json    what was removed and why;  summary.json  counts;  README.md  the card

With ``workers: N`` the teacher (program or engine) runs as a Ray job on N workers writing the same cache
(``ahalab.data.ray_workers``); unset, everything runs in this process. With ``push_to_hub`` the directory then
goes to the hub as a dataset repo (``ahalab.training.hub``).
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ahalab.config import Config, to_dict
from ahalab.data.dataset import (completion_of, count_tokens, make_row, reasoning_of, render_card, take_token_budget,
                                 write_jsonl)
from ahalab.tasks.decontaminate import check_eval_specs, decontaminate_against
from ahalab.data.filters import grade_traces, rejection_sample
from ahalab.data.journey import journeys_from_samples, journeys_from_search
from ahalab.engines import EngineName
from ahalab.errors import UserError
from ahalab.runs import RunDir
from ahalab.training.hub import HUB_KEYS, check_hub, push_run

Journey = Literal["samples", "search"]
TeacherKind = Literal["program", "openai", "engine"]
NOT_PUSHED = ("log.txt", "stage.json")  # this machine's logs; a recipe stage's own record


@dataclass
class DataConfig(Config):
    task: str = "countdown"
    task_options: dict[str, Any] | None = None
    data: str | None = None  # problems file; None: generated from ``seed``
    limit: int | None = 1000  # problems drawn (before decontamination)
    seed: int = 0
    teacher: TeacherKind = "program"
    teacher_model: str | None = None  # openai: served model name; engine: model (None: ``model``, self-distillation)
    model: str = "smollm2-135m"  # the student: engine teacher default, tokenizer for token counts
    base_url: str | None = None  # openai endpoint, e.g. http://127.0.0.1:8000/v1
    teacher_options: dict[str, Any] | None = None  # more teacher arguments (concurrency, max_dead_ends, ...)
    engine: EngineName | None = None
    format: str = "r1"  # the prompt format the teacher answers in
    row_format: str | None = None  # the prompt format of the written rows (None: format)
    reasoning: bool = True  # False: rows keep only the verified answer, with an empty <think> (non-reasoning data)
    samples: int = 1
    temperature: float = 0.8
    max_tokens: int = 1024
    filters: dict[str, float] | None = None  # name -> threshold, see ahalab.data.filters
    per_problem: int | None = 1
    lang: str = "en"
    journey: Journey | None = None
    examples: int | None = None  # rows kept (journey: pairs), in problem order
    match_tokens: bool = False  # journey: also shortcut_tokens.jsonl
    decontaminate: list[dict[str, Any]] | None = None  # eval sets: [{task, data, limit, seed, options}]
    ngram: int = 8
    overlap: float = 0.5
    out: str | None = None
    # the hub (see ahalab.training.hub; token: $HF_TOKEN or `hf auth login`)
    push_to_hub: bool = False  # at the end, upload the dataset directory (card included; not log.txt) to the hub; a
    #                           failed push keeps the data, is recorded in summary.json and exits non-zero
    hub_dataset_id: str | None = None  # "name" (your namespace) or "owner/name"; None: the directory's name
    hub_private_repo: bool | None = None  # create the repo private; None: the namespace's default
    # Ray (pip install 'ahalab[ray]'): the teacher on N workers, the same traces and cache as in one process
    workers: int | None = None  # None: one process (no Ray); N: a Ray job on N workers (program, engine teachers)
    worker_options: dict[str, Any] | None = None  # Ray resources per worker, e.g. {num_gpus: 1} (default num_cpus 1)
    ray_address: str | None = None  # the Ray cluster to join ("auto", "ray://head:10001"); None: $RAY_ADDRESS or
    #                                 a new local Ray

    NEUTRAL: ClassVar[frozenset[str]] = Config.NEUTRAL | HUB_KEYS | {"workers", "worker_options", "ray_address"}

    def validate(self) -> None:
        from ahalab.prompts import get_format

        cfg = self
        check_eval_specs(cfg.decontaminate)
        for fmt in (cfg.format, cfg.row_format):
            if fmt is not None:
                get_format(fmt)
        if cfg.journey == "search" and cfg.task != "countdown":
            raise UserError("journey 'search' comes from the countdown program teacher: use task countdown")
        if cfg.journey == "samples" and cfg.samples < 2:
            raise UserError("journey 'samples' needs several samples per problem (samples >= 2) to find a wrong "
                            "and a right one")
        if cfg.match_tokens and cfg.journey is None:
            raise UserError("match_tokens compares a journey set with shortcuts: set journey")
        if cfg.journey and (cfg.row_format or not cfg.reasoning):
            raise UserError("row_format and reasoning: false apply to plain traces, not journey data")
        if cfg.teacher == "openai" and not (cfg.base_url and cfg.teacher_model):
            raise UserError("the openai teacher needs base_url and teacher_model")
        check_hub(cfg.push_to_hub, cfg.hub_dataset_id, "hub_dataset_id")
        if cfg.workers is not None:
            if cfg.workers < 1:
                raise UserError(f"workers must be >= 1 (got {cfg.workers}); leave it unset for one process")
            if cfg.teacher == "openai" or cfg.journey == "search":
                raise UserError("workers run program and engine teachers; the openai teacher is concurrent already "
                                "(teacher_options.concurrency) and journey 'search' asks no teacher")
            if importlib.util.find_spec("ray") is None:
                raise UserError("workers: N runs on Ray, which is not installed: pip install 'ahalab[ray]' (or "
                                "leave workers unset)")


def make_teacher(cfg: DataConfig, task: Any, engine: Any = None) -> Any:
    """The teacher ``cfg`` names, for ``task`` (``engine``: an already built engine for the engine teacher); with
    ``workers``, a RayTeacher whose workers each build that teacher (and their own engine)."""
    from ahalab.data import programs, teachers

    if cfg.workers is not None:
        return _ray_teacher(cfg, engine)
    options = dict(cfg.teacher_options or {})
    if cfg.teacher == "program":
        if cfg.task not in programs.PROGRAM_TEACHERS:
            raise UserError(f"no program teacher for task '{cfg.task}' (program teachers: "
                            f"{', '.join(programs.PROGRAM_TEACHERS)})")
        return programs.PROGRAM_TEACHERS[cfg.task](**options)
    common = {"fmt": cfg.format, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "seed": cfg.seed}
    if cfg.teacher == "openai":
        return teachers.OpenAITeacher(cfg.base_url, cfg.teacher_model, task, **common, **options)
    if engine is None:
        from ahalab.engines import engine_for

        engine = engine_for(cfg.teacher_model or cfg.model, cfg.engine, seed=cfg.seed)
    return teachers.EngineTeacher(engine, task, **common, **options)


def teacher_from_config(cfg: DataConfig) -> Any:
    """The single-process teacher ``cfg`` names, its task built from ``cfg`` too (what each Ray worker runs)."""
    from ahalab.tasks import get_task

    return make_teacher(cfg, get_task(cfg.task, **(cfg.task_options or {})))


def _ray_teacher(cfg: DataConfig, engine: Any) -> Any:
    """``cfg``'s teacher on ``cfg.workers`` Ray workers; the model is fetched here first, once, not by each worker."""
    import functools

    from ahalab.data.ray_workers import RayTeacher
    from ahalab.models import resolve_model

    if engine is not None:
        raise UserError("with workers, each Ray worker builds its own engine: pass no engine (or unset workers)")
    one = dataclasses.replace(cfg, workers=None)
    if cfg.teacher == "engine":
        one.teacher_model = resolve_model(cfg.teacher_model or cfg.model)
    return RayTeacher(functools.partial(teacher_from_config, one), cfg.workers, cfg.worker_options, cfg.ray_address)


def _tokenizer(cfg: DataConfig):
    from transformers import AutoTokenizer

    from ahalab.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    return lambda text: tok(text, add_special_tokens=False)["input_ids"]


def build_dataset(cfg: DataConfig, engine: Any = None) -> dict[str, Any]:
    """Build the dataset ``cfg`` describes into ``cfg.out``; returns {file label: path, ..., "summary": dict}."""
    from ahalab.tasks import get_task

    cfg.validate()
    task = get_task(cfg.task, **(cfg.task_options or {}))
    problems = task.load(cfg.data, limit=cfg.limit, seed=cfg.seed)
    run = RunDir.create(cfg.out, "data", to_dict(cfg))
    clean = decontaminate_against(problems, cfg.decontaminate, cfg.ngram, cfg.overlap)
    run.write_json("decontamination.json", {"summary": clean.summary, "removed": clean.removed})
    problems = clean.kept
    tokenize = _tokenizer(cfg) if cfg.match_tokens or "max_tokens" in (cfg.filters or {}) else None
    teacher_name, stats, selection_summary = "", [], {}
    files: dict[str, list[dict]] = {}
    if cfg.journey == "search":
        pairs = journeys_from_search(problems, **(cfg.teacher_options or {}))
        teacher_name = pairs[0].teacher if pairs else "program:countdown"
    else:
        teacher = make_teacher(cfg, task, engine)
        teacher_name = teacher.name
        try:
            traces = teacher.generate(problems, cfg.samples, cache=run.file("traces.jsonl"))
        finally:
            if engine is None:
                teacher.close()  # made here (an engine, Ray workers): closed before whatever runs next starts one
        graded = grade_traces(task, problems, traces)
        selection = rejection_sample(graded, cfg.filters, None if cfg.journey else cfg.per_problem, cfg.lang, tokenize)
        stats, selection_summary = selection.stats, selection.summary
        if cfg.journey == "samples":
            pairs = journeys_from_samples(task, selection.kept + [g for g in graded if not g.correct])
        else:
            files["train"] = [make_row(g.problem, task, reasoning_of(g.trace) if cfg.reasoning else "",
                                       g.answer, g.trace.teacher, "trace" if cfg.reasoning else "direct",
                                       fmt=cfg.row_format or cfg.format) for g in selection.kept][:cfg.examples]
    if cfg.journey:
        chosen = pairs[:cfg.examples]
        files["journey"] = [p.rows(task, cfg.format)[0] for p in chosen]
        files["shortcut"] = [p.rows(task, cfg.format)[1] for p in chosen]
        if cfg.match_tokens:
            budget = count_tokens(files["journey"], tokenize)
            files["shortcut_tokens"] = take_token_budget([p.rows(task, cfg.format)[1] for p in pairs], budget, tokenize)
    _check_rows(task, problems, files)
    paths = {name: str(write_jsonl(run.file(f"{name}.jsonl"), rows)) for name, rows in files.items()}
    counts = {f"{name}.jsonl": len(rows) for name, rows in files.items()}
    summary = {"problems": len(problems) + len(clean.removed), "decontaminated_away": len(clean.removed),
               "teacher": teacher_name, **selection_summary, "files": counts}
    if tokenize:
        summary["assistant_tokens"] = {f"{n}.jsonl": count_tokens(rows, tokenize) for n, rows in files.items()}
    run.write_summary(summary)
    info = {"task": f"{cfg.task} {cfg.task_options or ''}".strip(),
            "problems": cfg.data or f"generated, seed {cfg.seed}",
            "teacher": teacher_name, "samples per problem": cfg.samples, "filters": cfg.filters or "verified only",
            "kept per problem": cfg.per_problem, "journey": cfg.journey or "no",
            "prompt format": cfg.format + (f" (rows: {cfg.row_format})" if cfg.row_format else ""),
            "reasoning kept": cfg.reasoning,
            "decontaminated against": ", ".join(clean.summary["eval_sets"]) or "nothing",
            "n-gram / overlap": f"{cfg.ngram} / {cfg.overlap}"}
    run.write_text("README.md", render_card(f"ahalab {cfg.task} distillation data", info, stats, clean.removed,
                                            counts))
    if cfg.push_to_hub:  # everything is written: a failed push loses nothing
        push_run(run, summary, run.path, repo_id=cfg.hub_dataset_id, private=cfg.hub_private_repo,
                 repo_type="dataset", what="data run", ignore=NOT_PUSHED)
    return {**paths, "dir": str(run.path), "summary": summary}


def _check_rows(task: Any, problems: list, files: dict[str, list[dict]]) -> None:
    """Every row must ask its problem's question and its assistant message must verify (a guard: the builders
    only emit verified answers to the questions they were given)."""
    by_id = {p.id: p for p in problems}
    for name, rows in files.items():
        for row in rows:
            problem = by_id[row["problem_id"]]
            if problem.question not in row["messages"][-2]["content"]:
                raise RuntimeError(f"{name}: row for {row['problem_id']} does not ask its problem's question")
            if not task.is_correct(problem, completion_of(row)):
                raise RuntimeError(f"{name}: row for {row['problem_id']} does not verify")
