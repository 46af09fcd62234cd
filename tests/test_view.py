"""`ahalab view`: the normaliser of every samples format, escaping, and the page itself in headless Chromium."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from ahalab.cli import main
from ahalab.errors import UserError
from ahalab.view import load_source, normalise, pair_sources, render_html, split_think, write_view

# Model text that would run script if the page ever parsed it as HTML.
INJECTION = ('</script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
             '<!-- <script>window.__pwned = 3</script>')


def _write(d: Path, rows: list[dict], config: dict | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if config is not None:
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    return d


def _eval(pid: str, answer: str | None, gold: str, correct: bool, finish: str = "stop", sample: int = 0,
          completion: str | None = None) -> dict:
    return {"problem_id": pid, "sample": sample, "prompt": f"Q {pid}?", "gold": gold, "answer": answer,
            "completion": completion if completion is not None else f"<think>thinking on {pid}</think> {answer}",
            "correct": correct, "score": float(correct), "tokens": 9, "finish_reason": finish}


def _zero(step: int, pid: str, completion: str, accuracy: float | None, gold: str = "7", **extra) -> dict:
    return {"step": step, "problem_id": pid, "question": f"What is {pid}?", "answer": gold, "prompt": "<prompt>",
            "completion": completion, "reward": 1.0, "advantage": 0.5, "reward_accuracy": accuracy, "tokens": 5,
            "finish_reason": "stop", **extra}


# --- the normaliser -----------------------------------------------------------------------------


def test_eval_rows_get_their_verdicts() -> None:
    rec = normalise(_eval("p1", "7", "7", True), "f:1")
    assert {k: rec[k] for k in ("problem_id", "sample", "step", "answer", "gold", "verdict", "tokens")} == \
        {"problem_id": "p1", "sample": 0, "step": None, "answer": "7", "gold": "7", "verdict": "correct", "tokens": 9}
    assert rec["prompt"] == "Q p1?" and rec["completion"].startswith("<think>") and rec["extra"] == {"score": 1.0}
    assert normalise(_eval("p", "8", "7", False), "f:1")["verdict"] == "wrong"
    assert normalise(_eval("p", None, "7", False), "f:1")["verdict"] == "unparsed"
    assert normalise(_eval("p", "8", "7", False, "length"), "f:1")["verdict"] == "truncated"
    assert normalise(_eval("p", "7", "7", True, "length"), "f:1")["verdict"] == "correct"  # right before the cut
    assert normalise({**_eval("p", "8", "7", False), "correct": None}, "f:1")["verdict"] == "ungraded"


def test_rl_rows_grade_by_their_accuracy_reward_and_extract_the_answer() -> None:
    rec = normalise(_zero(3, "q", "<think>3+4</think>\n<answer> 7 </answer>", 1.0), "f:1")
    assert (rec["step"], rec["sample"], rec["question"], rec["answer"], rec["gold"], rec["verdict"]) == \
        (3, None, "What is q?", "7", "7", "correct")  # "answer" of an RL row is the gold
    assert rec["extra"] == {"reward": 1.0, "advantage": 0.5, "reward_accuracy": 1.0}
    assert normalise(_zero(3, "q", "<answer>8</answer>", 0.0), "f:1")["verdict"] == "wrong"
    assert normalise(_zero(3, "q", "no idea", 0.0), "f:1")["verdict"] == "unparsed"
    assert normalise(_zero(3, "q", "<answer>8</answer>", None), "f:1")["verdict"] == "ungraded"  # no verifier
    code = {k: v for k, v in _zero(1, "c", "```python\nx\n```", None).items() if k != "reward_accuracy"}
    assert normalise({**code, "reward_code_all_pass": 1.0}, "f:1")["verdict"] == "correct"
    assert normalise(_zero(1, "q", "the answer is blue", 0.0), "f:1", extract=lambda t: t[-4:])["answer"] == "blue"


def test_scale_rows_of_both_writers() -> None:
    sweep = {"problem_id": "p", "level": 2, "sample": "greedy", "gold": "5", "answer": "5", "correct": True,
             "tokens": 30, "prompt_tokens": 12, "finish_reason": "stop", "scores": {"prm": 0.9}, "text": "so 5"}
    rec = normalise(sweep, "f:1")
    assert (rec["sample"], rec["completion"], rec["prompt"], rec["verdict"], rec["tokens"]) == \
        ("greedy", "so 5", None, "correct", 30)
    assert rec["extra"] == {"level": 2, "prompt_tokens": 12, "scores": {"prm": 0.9}}
    outcome = {"strategy": "vote", "budget": 8, "problem_id": "p", "level": 1, "gold": "5", "answer": "6",
               "correct": False, "gen_tokens": 400, "forward_tokens": 500, "wall_s": 1.5, "text": "6"}
    rec = normalise(outcome, "f:1")
    assert (rec["sample"], rec["verdict"], rec["tokens"]) == ("vote@8", "wrong", 400)


def test_unknown_or_malformed_rows_name_file_and_line(tmp_path) -> None:
    d = _write(tmp_path / "run", [_eval("p", "7", "7", True)])
    with (d / "samples.jsonl").open("a") as f:
        f.write(json.dumps({"problem_id": "p", "loss": 0.3}) + "\n")
    with pytest.raises(UserError, match=re.escape(f"{d / 'samples.jsonl'}:2: not a samples row") + ".*keys: loss"):
        write_view(str(d))
    _write(d, [{**_eval("p", "7", "7", True), "completion": ["not", "text"]}])
    with pytest.raises(UserError, match=r"samples.jsonl:1: field completion is list"):
        write_view(str(d))
    assert main(["view", str(tmp_path / "nothing")]) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no samples.jsonl in it or below it"):
        write_view(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="--limit -1"):
        write_view(str(d), limit=-1)


def test_split_think() -> None:
    assert split_think("a<think>b</think>c") == ("a", "b", "c")
    assert split_think("b</think>c") == ("", "b", "c")  # the prompt opened the block
    assert split_think("a<think>b, cut off") == ("a", "b, cut off", "")
    assert split_think("no thinking") == ("no thinking", None, "")


def test_load_source_caps_numbers_rl_samples_and_uses_the_runs_task(tmp_path) -> None:
    rows = [_zero(s, p, "I think 5\nfinal: blue", 0.0) for s in (1, 2) for p in ("a", "b") for _ in range(3)]
    d = _write(tmp_path / "zero", rows, {"task": "jsonl", "task_options": {"extractors": "last_line"}})
    src = load_source("zero", d / "samples.jsonl", limit=None)
    assert src.total == 12 and [r["sample"] for r in src.records] == [0, 1, 2] * 4
    assert {r["answer"] for r in src.records} == {"final: blue"}  # the run's task, not the generic last number
    (d / "config.yaml").unlink()
    assert {r["answer"] for r in load_source("zero", d / "samples.jsonl", None).records} == {"5"}
    capped = load_source("zero", d / "samples.jsonl", limit=5)
    assert (capped.total, len(capped.records)) == (12, 5)
    page = write_view(str(d), limit=5).read_text()
    assert "showing the first 5 of 12 samples (--limit 5" in page


def _data_block(page: str) -> str:
    return re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.DOTALL).group(1)


def test_model_text_cannot_leave_the_data_block(tmp_path) -> None:
    d = _write(tmp_path / "run", [_eval(INJECTION, INJECTION, INJECTION, False, completion=INJECTION)])
    page = write_view(str(d)).read_text()
    block = _data_block(page)
    assert "<" not in block and ">" not in block and "&" not in block
    assert page.count("<script") == 2 and "__pwned" not in page.replace(block, "")
    data = json.loads(block)
    row = data["rows"][0]
    assert row["problem_id"] == INJECTION and row["a"]["pre"] == INJECTION and row["a"]["answer"] == INJECTION
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page and "document.write" not in page
    nonce = re.search(r"script-src 'nonce-([^']+)'", page).group(1)
    assert page.count(f'nonce="{nonce}"') == 2  # the page's own style and script, and nothing else may run
    title = render_html({"title": "</title><script>x()</script> %DATA%", "mode": "single", "runs": [],
                         "sources": [], "notes": [], "rows": []})
    assert "<title>&lt;/title&gt;&lt;script&gt;x()&lt;/script&gt; %DATA%</title>" in title


def test_cli_default_paths_and_pairing(tmp_path, capsys) -> None:
    a = _write(tmp_path / "base", [_eval("p1", "7", "7", True)])
    b = _write(tmp_path / "rl run", [_eval("p1", "8", "7", False)])
    assert main(["view", str(a)]) == 0
    assert capsys.readouterr().out.strip() == str(a / "view.html") and (a / "view.html").is_file()
    assert main(["view", str(a), str(b)]) == 0
    assert capsys.readouterr().out.strip() == str(a / "compare-rl_run.html")
    assert main(["view", str(a / "samples.jsonl"), "-o", str(tmp_path / "x" / "v.html")]) == 0
    assert (tmp_path / "x" / "v.html").is_file()
    recipe_a, recipe_b = tmp_path / "ra", tmp_path / "rb"
    for r in (recipe_a, recipe_b):
        _write(r / "01-direct", [_eval("p1", "7", "7", True)])
        _write(r / "07-report" / "evals" / "base-greedy", [_eval("p1", "7", "7", True)])
    _write(recipe_b / "03-zero", [_zero(1, "p1", "<answer>7</answer>", 1.0)])
    sa = [load_source(lbl, p, None) for lbl, p in [("01-direct", recipe_a / "01-direct" / "samples.jsonl")]]
    sb = [load_source(lbl, p, None) for lbl, p in [("01-direct", recipe_b / "01-direct" / "samples.jsonl"),
                                                    ("03-zero", recipe_b / "03-zero" / "samples.jsonl")]]
    pairs, notes = pair_sources(sa, sb)
    assert [p[0] for p in pairs] == ["01-direct"] and notes == ["only in B: 03-zero"]
    data = json.loads(_data_block(write_view(str(recipe_a), str(recipe_b)).read_text()))
    assert data["sources"] == ["01-direct", "07-report/evals/base-greedy"] and data["notes"] == ["only in B: 03-zero"]
    with pytest.raises(UserError, match="no samples file in common"):
        write_view(str(recipe_a / "07-report" / "evals" / "base-greedy"), str(recipe_b))
    assert json.loads(_data_block(write_view(str(recipe_a / "01-direct"), str(recipe_b)).read_text()))["sources"] == \
        ["01-direct"]  # a stage beside a recipe run: its stage of the same name


# --- the page in a real browser -----------------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system (make's browser target installs Debian's), driven by Playwright."""
    missing = None if _chromium() else "no chromium on PATH (`make browser` installs it)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = missing or "the playwright package is not installed (the test extra has it)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the viewer's browser test must run in CI: {missing}")
        pytest.skip(missing)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium())
        yield b
        b.close()


@pytest.fixture
def open_page(browser):
    """Open a file in a fresh page; yields (page, errors); errors collects console errors and uncaught ones."""
    context = browser.new_context()
    errors: list[str] = []

    def go(path: Path):
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.resolve().as_uri())
        return page, errors

    yield go
    context.close()


def _visible_rows(page) -> int:
    return page.locator("#rows > .row").count()


def test_the_page_filters_folds_and_never_runs_model_text(tmp_path, open_page) -> None:
    rows = []
    for step in (1, 2):
        for pid in ("p1", "p10", "p2"):
            rows += [_zero(step, pid, "<think>add them</think><answer>7</answer>", 1.0),
                     _zero(step, pid, "<answer>9</answer>", 0.0)]
    rows.append(_zero(1, "p2", "I give up", 0.0))
    rows.append({**_zero(2, INJECTION, INJECTION, 0.0, gold=INJECTION), "question": INJECTION, "prompt": INJECTION})
    run = _write(tmp_path / "zero", rows)
    page, errors = open_page(write_view(str(run), page_size=5))
    assert page.evaluate("window.__pwned") is None and page.locator("img").count() == 0
    assert _visible_rows(page) == 5 and page.text_content("#stats").startswith("14 of 14 rows")
    page.click("#more")
    page.click("#more")
    assert _visible_rows(page) == 14 and page.locator("#more").is_hidden()

    page.select_option("#verdict", "correct")
    assert _visible_rows(page) == 5 and page.text_content("#stats").startswith("6 of 14 rows")
    page.click("#more")
    assert _visible_rows(page) == 6
    assert set(page.locator("#rows .card").evaluate_all("cs => cs.map(c => c.dataset.verdict)")) == {"correct"}
    page.select_option("#verdict", "unparsed")
    assert page.locator("#rows .rowhead").all_inner_texts() == ["p2 · sample 2 · step 1"]
    page.select_option("#verdict", "wrong")
    assert _visible_rows(page) == 5 and page.text_content("#stats").startswith("7 of 14 rows")
    page.select_option("#verdict", "")
    page.fill("#problem", INJECTION)
    assert _visible_rows(page) == 1
    shown = page.locator("#rows .row").inner_text()  # as text: the id, the gold, the question and the body
    assert shown.count(INJECTION) == 4 and page.locator("#rows .card").get_attribute("data-verdict") == "wrong"
    page.fill("#problem", "p1")  # an exact id: p1 only, not p10
    assert page.text_content("#stats").startswith("4 of 14 rows")
    page.fill("#problem", "P1")  # otherwise a case-blind substring
    assert page.text_content("#stats").startswith("8 of 14 rows")
    page.select_option("#step", "2")
    assert page.text_content("#stats").startswith("4 of 14 rows")
    assert set(page.locator("#rows .rowhead").all_inner_texts()) == {"p1 · sample 0 · step 2",
                                                                      "p1 · sample 1 · step 2",
                                                                      "p10 · sample 0 · step 2",
                                                                      "p10 · sample 1 · step 2"}

    think = page.locator("#rows details.think").first
    assert think.evaluate("d => d.open") is False and think.locator("pre").is_hidden()
    think.locator("summary").click()
    assert think.evaluate("d => d.open") is True and think.locator("pre").inner_text() == "add them"
    assert page.locator("#rows details.prompt").first.evaluate("d => d.open") is False
    assert page.evaluate("window.__pwned") is None and page.locator("img").count() == 0
    assert errors == []


def test_the_comparison_page_pairs_rows_and_filters_differences(tmp_path, open_page) -> None:
    a = _write(tmp_path / "base", [_eval("p1", "7", "7", True), _eval("p2", "8", "7", False),
                                   _eval("p3", None, "7", False), _eval("p3", "7", "7", True, sample=1)])
    b = _write(tmp_path / "tuned", [_eval("p1", "7", "7", True), _eval("p2", "7", "7", True),
                                    _eval("p3", "9", "7", False, "length"), _eval("p4", "7", "7", True)])
    page, errors = open_page(write_view(str(a), str(b)))
    assert _visible_rows(page) == 5  # p1, p2, p3 (two samples), p4 only in B
    cards = page.locator("#rows .row .card")
    assert [cards.nth(i).inner_text().endswith("no such sample in this run") for i in range(10)] == \
        [False] * 7 + [True, True, False]  # B lacks sample 1 of p3, A lacks p4
    assert page.locator("#differ").is_visible()
    page.check("#differ")
    assert _visible_rows(page) == 4  # all but p1
    page.select_option("#verdict-a", "wrong")
    assert _visible_rows(page) == 1 and page.locator("#rows .rowhead").inner_text() == "p2 · sample 0"
    assert page.locator("#rows .card").evaluate_all("cs => cs.map(c => c.dataset.verdict)") == ["wrong", "correct"]
    page.select_option("#verdict-a", "")
    page.select_option("#verdict-b", "truncated")
    assert page.locator("#rows .rowhead").all_inner_texts() == ["p3 · sample 0"]
    assert "A: unparsed 1" in page.text_content("#stats")
    assert errors == []


def test_a_recipe_run_gets_a_source_selector(tmp_path, open_page) -> None:
    _write(tmp_path / "demo" / "01-direct", [_eval("p1", "7", "7", True), _eval("p2", "7", "7", True)])
    _write(tmp_path / "demo" / "07-report" / "evals" / "base-greedy", [_eval("p1", "1", "7", False)])
    (tmp_path / "demo" / "04-traces").mkdir()  # a stage without samples
    page, errors = open_page(write_view(str(tmp_path / "demo")))
    assert _visible_rows(page) == 3 and page.locator("#step-box").is_hidden()
    assert page.locator("#src option").all_inner_texts() == ["all (2)", "01-direct", "07-report/evals/base-greedy"]
    page.select_option("#src", label="07-report/evals/base-greedy")
    assert page.locator("#rows .rowhead").all_inner_texts() == ["p1 · sample 0 · 07-report/evals/base-greedy"]
    assert errors == []
