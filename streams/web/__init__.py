"""The worker's HTTP side: the query API and its routing to a user's owner, the job, monitoring,
restart and cluster endpoints, the token that guards them, and the dashboard."""
