"""The `study` CLI: config, plan, Ray Tune stages and MLflow tracking of a study."""
