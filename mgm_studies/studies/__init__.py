"""Studies: search spaces (`space.py`) and sweeps over them with Ray Tune (`sweep.py`)."""
