"""Ranker sizes the benchmarks train: the paper's (what `reaseq train` builds) and a compact one for CPU runs."""

from __future__ import annotations

from models.tiger import TigerConfig

RANKER_SIZES = {
    "paper": TigerConfig(),  # TIGER's 4+4 layers, width 128, MLP 1024
    "compact": TigerConfig(d_model=64, d_kv=32, num_heads=4, d_ff=256, num_encoder_layers=2, num_decoder_layers=2),
}
