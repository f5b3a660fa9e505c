"""Reconciliation: polling Instantly for what webhooks missed, its runs and their lock,
and the schedule inside the worker."""
