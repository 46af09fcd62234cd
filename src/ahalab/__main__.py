"""`python -m ahalab` (and `accelerate launch -m ahalab`, `torchrun -m ahalab`): the `ahalab` command."""
import sys

from ahalab.cli import main

sys.exit(main())
