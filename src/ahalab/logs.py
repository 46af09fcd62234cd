"""Quiet by default: ahalab's own progress bars, step lines and tables on the terminal; the logs of the engines
and libraries underneath (vLLM, transformers, torch's C++ core, the hub client) at ERROR unless asked for.

``configure`` runs before torch or vLLM are imported (the CLI and ``make demo`` call it first): most of these
libraries read their level from the environment once, at import. ``ahalab --verbose`` or ``AHALAB_LOG_LEVEL``
(DEBUG, INFO, WARNING, ERROR) turns them back up; a variable the user set themselves (``VLLM_LOGGING_LEVEL``,
``TRANSFORMERS_VERBOSITY``, ...) always wins.
"""
from __future__ import annotations

import logging
import os
import warnings

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def level(verbose: bool = False) -> str:
    """The libraries' log level: ``AHALAB_LOG_LEVEL``, else INFO with ``verbose``, else ERROR."""
    value = os.environ.get("AHALAB_LOG_LEVEL", "INFO" if verbose else "ERROR").upper()
    if value not in LEVELS:
        from ahalab.errors import UserError

        raise UserError(f"AHALAB_LOG_LEVEL must be one of {', '.join(LEVELS)} (got {value!r})")
    return value


def quiet() -> bool:
    """Whether library output (logs, their progress bars) is held back: the level is above INFO."""
    return LEVELS.index(level()) > LEVELS.index("INFO")


def configure(verbose: bool = False) -> str:
    """Set the libraries' levels for this process (and the processes it starts); returns the level."""
    lib = os.environ["AHALAB_LOG_LEVEL"] = level(verbose)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", lib)
    # vLLM applies that level only when an engine starts; what it logs at import goes to Python's last-resort
    # handler (WARNING and up) unless its logger has a level already.
    logging.getLogger("vllm").setLevel(os.environ["VLLM_LOGGING_LEVEL"].upper())
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", lib.lower())
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "INFO" if lib == "DEBUG" else lib)
    if lib == "ERROR":
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' load/save bars follow it
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
    return lib
