"""`python -m datafree ...` (and `torchrun -m datafree ...`)."""
import sys

from datafree.cli import main

sys.exit(main())
