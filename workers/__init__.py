"""Asynchronous LLM enrichment and diffusion inference, fed by the stream."""
