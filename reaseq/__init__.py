"""ReaSeq/SCoTER near-real-time recommender: shared contracts, settings and the operator CLI."""
