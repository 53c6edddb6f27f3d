"""The model zoo: enrichment models on per-device byte budgets (see ``manager.py``)."""
