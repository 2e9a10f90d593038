"""Stage train: labelled datasets, augmentation, fitting, evaluation, the promotion gate and
the retrain report.
"""
