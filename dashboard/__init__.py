"""The operator web page: pipeline health and throughput, recent enriched items, and a user lookup (``reaseq web``)."""
