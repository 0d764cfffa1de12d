"""Submitting jobs: the submission checked before any upstream call (`request`), idempotency
keys remembered per tenant (`idempotency`), and the one submission per key (`submitter`)."""
