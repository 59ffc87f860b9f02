"""Everything that trains and evaluates one model; usable without Ray, Optuna or MLflow."""
