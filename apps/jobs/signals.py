"""What the jobs app tells the apps above it, which it may not import.

``job_finalized`` is sent once per job, after ``job_finalize`` recorded its final tracking
data (keyword argument ``job``). Receivers only enqueue their own work; the decision and the
work stay in their services."""

from django.dispatch import Signal

job_finalized = Signal()
