import sys
from pathlib import Path

# tests/ helpers (tiny.py, brute_force.py) are imported as plain modules.
sys.path.insert(0, str(Path(__file__).parent))
