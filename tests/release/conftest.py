"""tests/release/ runs with tests/conftest.py's fixtures; the helpers of tests/integration/
(fixtures.py, roundtrip.py) are imported from there."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
