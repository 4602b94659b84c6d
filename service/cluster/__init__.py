"""The Ray side as the control plane sees it: a thin client of the Ray Jobs REST API (one Ray job per
attempt, cluster resources, logs) and the local head a single machine runs by default."""
