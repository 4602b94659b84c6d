"""The Ray side: runs one attempt of a job with ``mmae.train.fit`` and reports what it measures."""
