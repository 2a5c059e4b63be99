"""`python -m testbed up|down|status` (run from tests/, or with tests/ on PYTHONPATH)."""
import sys

from testbed.kafka import main

sys.exit(main())
