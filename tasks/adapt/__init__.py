"""Adaptation: data for a retrain drawn from what ``classify`` has already seen.

``stream``: frames of classified files read back by content hash (the building block, and a
recent unlabeled sample); ``feedback``: the frames people labeled with ``posebatch
feedback``, and a held-out split of them that stays put as more labels arrive.
"""
