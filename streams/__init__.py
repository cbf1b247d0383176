"""The Faust stream app: topics, agents and RocksDB tables."""
