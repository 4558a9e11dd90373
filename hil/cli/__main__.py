"""`python -m hil.cli …` is the `hil` command."""
import sys

from hil.cli import main

sys.exit(main())
