"""Who is asking: the caller of a request, its tenant and scopes, and the ownership of jobs."""
