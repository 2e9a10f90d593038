"""Stage monitor (read side): how a model is doing on unlabeled data, run after run.

``estimate`` (label-free accuracy and F1 from calibrated confidences), ``inputs`` (per-joint
statistics of the heatmaps, mergeable across chunks), ``drift`` (distances to the training
reference), ``reference`` (that reference, computed at retraining and saved with the
model) and ``history`` (one row per run, its schema and its Parquet writer). Pure NumPy and
pyarrow, no Prefect.
"""
