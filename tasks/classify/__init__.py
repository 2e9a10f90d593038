"""Stage classify: find ready batches, run the model, record each file once in the ledger,
write predictions and rejections, summarise the run.
"""
