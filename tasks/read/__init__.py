"""Stage read: querying and summarising the classification outputs (query, SQL, summary,
HTML report, plots, heatmap viewer) and writing results as tables.
"""
