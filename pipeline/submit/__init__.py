"""Batch submission: hand a job to SLURM, a Ray cluster's Jobs API or a Dask scheduler, and come back for it.

Every submission leaves a record in the run folder (``RUN_DIR/.submit/``): the
scheduler, its job id, where its log is, and for SLURM the batch script. A
run folder has one writer at a time: :func:`pipeline.submit.records.refuse_if_active`
refuses a second submission while the first is queued or running.
"""
