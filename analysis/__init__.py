"""Reporting: MLflow runs of a study -> pandas -> the paper's tables and figures.

`runs` reads (the only MLflow reads of the project), `tables` and `stats` compute,
`paper` holds the paper's numbers, `figures` and `render` write, `report` orchestrates,
`explain` draws GradCAM++ heatmaps of a recorded checkpoint, `sweep` (and `sweep_figures`)
say what the sweep learned (best trial, fANOVA importance). Imports `trainables`,
never `study`.
"""
