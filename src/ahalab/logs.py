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


# Library loggers whose records also go to a run's log.txt; ahalab's own and any that do not propagate to root.
LIBRARIES = ("ahalab", "transformers", "vllm", "huggingface_hub", "peft", "datasets", "accelerate",
             "bitsandbytes")  # not torch:
# torch._logging re-installs its handlers lazily, and its INFO lines would reach the terminal
_file_handler: logging.Handler | None = None


def file_level() -> str:
    """The level of a run's log.txt: INFO, or lower when ``AHALAB_LOG_LEVEL`` asks for it."""
    lib = level()
    return lib if LEVELS.index(lib) < LEVELS.index("INFO") else "INFO"


def log_to_file(path: str | os.PathLike[str]) -> logging.Handler:
    """Send the full logs (ahalab's and the libraries', at ``file_level``) to ``path`` from now on, while the
    terminal keeps the configured level; a later call moves the file to another run. transformers is configured
    here (its logger is otherwise reset when it first logs); a vLLM imported later sets its own logger's level, so
    the engine calls ``route`` after importing it."""
    global _file_handler
    try:
        import transformers.utils.logging as hf_logging

        hf_logging.get_logger()  # configures transformers' logger and handler now, not after ours
    except ImportError:
        pass
    lib, full = level(), file_level()
    if _file_handler is not None:
        for name in ("", *LIBRARIES):
            logging.getLogger(name).removeHandler(_file_handler)
        _file_handler.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(full)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    if not root.handlers:  # stands in for Python's last-resort handler (WARNING), which the file handler would silence
        terminal = logging.StreamHandler()
        terminal.setLevel(min(getattr(logging, lib), logging.WARNING))
        terminal.addFilter(lambda r: r.name.split(".")[0] not in LIBRARIES[1:] or r.levelno >= getattr(logging, lib))
        root.addHandler(terminal)
    root.addHandler(handler)
    _file_handler = handler
    for name in LIBRARIES:
        route(name)
    return handler


def route(name: str) -> None:
    """Send library ``name``'s records to the run's log.txt too (at ``file_level``) while its own terminal
    handlers keep the terminal's level; call again after a library re-configures its logger (vLLM at import)."""
    if _file_handler is None:
        return
    logger = logging.getLogger(name)
    terminal_level = logger.getEffectiveLevel()
    for h in logger.handlers:  # a library's own terminal handler keeps the level the terminal had
        if h is not _file_handler and h.level == logging.NOTSET:
            h.setLevel(terminal_level)
    logger.setLevel(min(terminal_level, getattr(logging, file_level())))
    if not logger.propagate and _file_handler not in logger.handlers:
        logger.addHandler(_file_handler)
