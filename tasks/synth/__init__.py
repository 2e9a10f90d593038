"""Stage synth: synthetic heatmaps for demos, tests and robustness sweeps (skeletons, nuisance
factors, generated datasets, sample outputs).
"""
