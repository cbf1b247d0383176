"""The stream topology: the app of one state generation with every agent registered on it."""

from __future__ import annotations

from reaseq.settings import Settings
from streams import catalog, histories, ingest
from streams.app import StreamApp, create_app


def build_app(
    settings: Settings, bootstrap: str, generation: int, worker_name: str = "w0", embedded_broker: bool = False
) -> StreamApp:
    """The stream app of ``generation`` with the ingest, catalog and histories agents registered, not yet started."""
    stream_app = create_app(settings, bootstrap, generation, worker_name, embedded_broker)
    for module in (ingest, catalog, histories):
        module.register(stream_app)
    return stream_app
