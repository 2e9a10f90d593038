"""Stage I/O: where files live (storage), what a valid heatmap file is (validate), the
output table schemas (schema) and the crash-test hook (faults). Every other stage builds on it.
"""
