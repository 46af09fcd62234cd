"""`python -m ahalab` (and `accelerate launch -m ahalab`, `torchrun -m ahalab`): the `ahalab` command."""
import logging
import os
import sys

from ahalab.cli import entry

code = entry()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # one of a launcher's ranks, its work done and its files closed: skip the interpreter's teardown, in which a rank
    # can abort ("terminate called without an active exception", torch's process-group threads) and fail the run
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
