"""The T5 encoder and decoder as plain passes over Hugging Face's T5 weights, shared by training and inference.

Three things the stock forward cannot do, which is why the ranker runs its own:
- attention is ``scaled_dot_product_attention`` (fused kernels on CUDA) with T5's relative position bias as its mask;
- the encoder's mask may be block-causal, so that one pass over a sequence encodes every prefix of it;
- the decoder reads each user's cross-attention keys and values, projected once, for any number of code sequences
  of that user (beams, candidates, or every target of a training sequence), each row with its own view of the memory.

Dropout is T5's, at T5's places, where the stack is in training mode. Tests hold the passes equal to the stock forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.models.t5.modeling_t5 import T5Attention, T5LayerFF, T5Stack

Cache = list[tuple[torch.Tensor, torch.Tensor]]  # per decoder layer, self-attention keys and values [rows, h, p, d_kv]


@dataclass(frozen=True)
class Memory:
    """Per decoder layer, the cross-attention keys and values [B, h, S, d_kv]; an additive mask [B, 1, 1 or rows, S]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as SDPA's additive one: 0 where attention is allowed, -inf where not."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))


def _dropout(stack: T5Stack) -> float:
    return stack.config.dropout_rate if stack.training else 0.0


def dropout(states: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout whose mask, on the CPU, comes from 16 random bits per element drawn 64 at a time: drawing one float
    per element is most of what dropout costs there, more than the layer's matrix product. ``p`` is kept to 1/65536."""
    if p == 0:
        return states
    if states.is_cuda:
        return F.dropout(states, p, True)
    count = states.numel()
    bits = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64, device=states.device)
    keep = bits.view(torch.int16)[:count].view(states.shape) >= round(p * 65536) - 32768
    return torch.where(keep, states * (1 / (1 - p)), 0.0)


def _attend(
    attention: T5Attention,
    query_states: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    p: float,
) -> torch.Tensor:
    """T5 attention (no 1/sqrt(d) scaling) of queries [..., q, d] over projected keys and values [B, h, k, d_kv]."""
    lead = query_states.shape[:-2]
    query = (
        attention.q(query_states)
        .view(keys.size(0), -1, attention.n_heads, attention.key_value_proj_dim)
        .transpose(1, 2)
    )
    mixed = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask.to(query.dtype), dropout_p=p, scale=1.0)
    return attention.o(mixed.transpose(1, 2).reshape(*lead, -1, attention.inner_dim))


def _heads(attention: T5Attention, projection: torch.nn.Linear, states: torch.Tensor) -> torch.Tensor:
    """States [B, n, d] projected to [B, h, n, d_kv]."""
    return projection(states).view(states.size(0), states.size(1), attention.n_heads, -1).transpose(1, 2)


def _feed_forward(layer: T5LayerFF, hidden: torch.Tensor, p: float) -> torch.Tensor:
    dense = layer.DenseReluDense
    inner = dropout(dense.act(dense.wi(layer.layer_norm(hidden))), p)  # type: ignore[operator]  # act is a module
    return hidden + dropout(dense.wo(inner), p)


def encode(encoder: T5Stack, embeds: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Final encoder states [B, S, d] of input embeddings [B, S, d].

    ``allowed`` [B, 1 or S, S] says which positions each position reads: the padding mask broadcast over queries
    (T5's bidirectional encoder), or a block-causal one.
    """
    p = _dropout(encoder)
    length = embeds.size(1)
    mask = encoder.block[0].layer[0].SelfAttention.compute_bias(length, length) + additive(
        allowed.unsqueeze(1), embeds.dtype
    )
    hidden = dropout(embeds, p)
    for block in encoder.block:
        attention = block.layer[0].SelfAttention
        normed = block.layer[0].layer_norm(hidden)
        keys, values = _heads(attention, attention.k, normed), _heads(attention, attention.v, normed)
        hidden = hidden + dropout(_attend(attention, normed, keys, values, mask, p), p)
        hidden = _feed_forward(block.layer[-1], hidden, p)
    return dropout(encoder.final_layer_norm(hidden), p)


def memory(decoder: T5Stack, states: torch.Tensor, allowed: torch.Tensor) -> Memory:
    """Each decoder layer's cross-attention keys and values of encoder states [B, S, d], projected once.

    ``allowed`` [B, 1 or rows, S]: the encoder positions each decoder row reads (rows: sequences x positions).
    """
    keys, values = [], []
    for block in decoder.block:
        attention = block.layer[1].EncDecAttention
        keys.append(_heads(attention, attention.k, states))
        values.append(_heads(attention, attention.v, states))
    return Memory(keys, values, additive(allowed.unsqueeze(1), states.dtype))


def decode(
    decoder: T5Stack, tokens: torch.Tensor, memory: Memory, past: Cache | None = None
) -> tuple[torch.Tensor, Cache]:
    """Final decoder states [B, n, q, d] of q new positions of n code sequences per user (tokens [B, n, q]).

    ``past`` holds each layer's self-attention keys and values of the p positions before; the returned cache
    covers all p + q.
    """
    p = _dropout(decoder)
    size, count, length = tokens.shape
    start = 0 if past is None else past[0][0].size(2)
    total = start + length
    causal = torch.ones(total, total, dtype=torch.bool, device=tokens.device).triu(1)[start:]
    first = decoder.block[0].layer[0].SelfAttention  # T5 shares the first layer's position bias
    self_bias = first.compute_bias(total, total)[:, :, start:].masked_fill(causal, float("-inf"))
    hidden = dropout(decoder.embed_tokens(tokens), p)
    cache = []
    for index, block in enumerate(decoder.block):
        attention = block.layer[0].SelfAttention
        normed = block.layer[0].layer_norm(hidden).view(size * count, length, -1)
        key, value = _heads(attention, attention.k, normed), _heads(attention, attention.v, normed)
        if past is not None:
            key = torch.cat([past[index][0], key], dim=2)
            value = torch.cat([past[index][1], value], dim=2)
        cache.append((key, value))
        mixed = _attend(attention, normed, key, value, self_bias, p)
        hidden = hidden + dropout(mixed.view(size, count, length, -1), p)

        attention = block.layer[1].EncDecAttention
        normed = block.layer[1].layer_norm(hidden).view(size, count * length, -1)
        mixed = _attend(attention, normed, memory.keys[index], memory.values[index], memory.mask, p)
        hidden = hidden + dropout(mixed.view(size, count, length, -1), p)

        hidden = _feed_forward(block.layer[2], hidden, p)
    return dropout(decoder.final_layer_norm(hidden), p), cache
