"""How flows run: the ephemeral Prefect server, serving deployments, the watcher, runners and
the environment doctor. The flows themselves stay in flows/classify.py and flows/retrain.py.
"""
