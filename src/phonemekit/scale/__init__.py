"""Scale: engines that run feature extraction on this machine or on a Ray cluster, into one cache."""
