"""Builders shared by tests in several folders (bad files, registries, tiny models, a headless
Chromium, operation counters). Tests import them as ``tests.support.<module>``.
"""
