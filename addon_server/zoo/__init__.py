"""The model zoo: many models on per-GPU byte budgets (registry, manager, per-family loaders)."""
