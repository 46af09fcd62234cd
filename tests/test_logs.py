"""Quiet by default: library logs at ERROR unless --verbose / AHALAB_LOG_LEVEL; the user's own settings win."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ahalab.engines import vllm_available
from ahalab.errors import UserError
from ahalab.logs import configure, level, quiet

VARS = ("AHALAB_LOG_LEVEL", "VLLM_LOGGING_LEVEL", "TRANSFORMERS_VERBOSITY", "TORCH_CPP_LOG_LEVEL",
        "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_NO_ADVISORY_WARNINGS")


@pytest.fixture
def clean_env(monkeypatch):
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_libraries_at_error_by_default_and_info_when_verbose(clean_env) -> None:
    assert configure() == "ERROR" and quiet()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "ERROR" and os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    assert os.environ["TORCH_CPP_LOG_LEVEL"] == "ERROR" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    for name in VARS:
        clean_env.delenv(name, raising=False)
    assert configure(verbose=True) == "INFO" and not quiet()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "INFO" and "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ


def test_ahalab_log_level_and_the_users_own_variables_win(clean_env) -> None:
    clean_env.setenv("AHALAB_LOG_LEVEL", "warning")
    clean_env.setenv("VLLM_LOGGING_LEVEL", "DEBUG")
    assert configure(verbose=True) == "WARNING" and quiet()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "DEBUG" and os.environ["TRANSFORMERS_VERBOSITY"] == "warning"
    clean_env.setenv("AHALAB_LOG_LEVEL", "loud")
    with pytest.raises(UserError, match="AHALAB_LOG_LEVEL"):
        level()


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
@pytest.mark.parametrize("verbose", [False, True])
def test_a_vllm_engine_start_prints_nothing_unless_verbose(tiny_model, verbose) -> None:
    """A whole engine start and generate in a fresh process: not one log line or loading bar by default."""
    code = ("import sys; from ahalab.logs import configure; configure(sys.argv[2] == '1'); "
            "from ahalab.engines import make_engine; "
            "e = make_engine('vllm', sys.argv[1], dtype='float32', max_model_len=256, kv_cache_gib=0.25); "
            "e.generate(['hi'], max_tokens=4); e.close(); print('done')")
    env = {k: v for k, v in os.environ.items() if k not in VARS}
    out = subprocess.run([sys.executable, "-c", code, tiny_model, "1" if verbose else "0"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = (out.stdout + out.stderr).splitlines()
    noise = [line for line in printed if line != "done"]
    if verbose:
        assert any("INFO" in line for line in noise)
    else:
        assert noise == [], noise[:10]
