"""Launchers and production configuration: the embedded broker, topic provisioning, the local stack."""
