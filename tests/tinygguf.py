"""Writes two tiny llama-architecture GGUF models for a real llama.cpp server in the
tests: a chat model and a pooled embedding model, random weights, a byte-level BPE
vocabulary built here (nothing copied from another project), in well under a second.

    python -m tests.tinygguf DIRECTORY      # writes DIRECTORY/tiny-chat.gguf and tiny-embed.gguf

Random weights write random text, so the chat model's next-token distribution is set
by hand: every token embedding carries a large constant in dimension 0 and the layers
add little, so after the final norm dimension 0 dominates, and column 0 of the output
matrix is the logit each token gets (plus a little noise from the other dimensions).
Printable ASCII is likely, with spaces and quotes often (so JSON strings close under a
grammar), the end-of-text token rarely, and control bytes never: the text is random
letters, but it is valid UTF-8 without NULs, which PostgreSQL can store.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

N_EMBD = 64
N_LAYERS = 2
N_HEADS = 4
N_FF = 128
N_CTX = 8192
#: Merges on top of the 256 byte tokens: a few English pairs, so BPE merging is exercised.
MERGES = (
    ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("a", "n"),
    ("o", "n"), ("Ġ", "a"), ("r", "e"), ("Ġ", "s"), ("o", "u"), ("Ġ", "w"),
)  # fmt: skip
BOS, EOS = "<|bos|>", "<|eos|>"
#: Logits of the chat model's tokens (see the module docstring); anything else: never.
LOGITS = {"letter": 2.0, "upper": 0.3, "space": 3.2, "quote": 2.2, "stop": 1.0, "merge": 1.5}
EOS_LOGIT = 1.0
NEVER = -30.0


def byte_symbols() -> list[str]:
    """GPT-2's byte-to-character table: each byte as the character byte-level BPE
    vocabularies spell it (printable bytes as themselves, the rest moved past 255)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def vocabulary() -> tuple[list[str], list[int], list[str]]:
    """Tokens, their types (1 normal, 3 control) and merges: 256 bytes, the merges'
    results, then the two control tokens."""
    tokens = byte_symbols()
    merges = []
    for left, right in MERGES:
        merges.append(f"{left} {right}")
        tokens.append(left + right)
    types = [1] * len(tokens) + [3, 3]
    return [*tokens, BOS, EOS], types, merges


def _logit(token: str, symbols: list[str]) -> float:
    if token == EOS:
        return EOS_LOGIT
    if token not in symbols:
        return LOGITS["merge"] if token != BOS else NEVER
    byte = symbols.index(token)
    if byte >= 0x80:  # a lone byte of a multi-byte character: could be invalid UTF-8
        return NEVER
    if chr(byte).islower():
        return LOGITS["letter"]
    if chr(byte).isupper():
        return LOGITS["upper"]
    if byte == ord(" "):
        return LOGITS["space"]
    if byte == ord('"'):
        return LOGITS["quote"]
    if chr(byte) in ".,":
        return LOGITS["stop"]
    return NEVER


def _weights(vocab: list[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The tensors of a 2-layer llama, numpy shape (out, in) as llama.cpp reads them."""
    symbols = byte_symbols()
    n_vocab = len(vocab)
    embd = rng.normal(0, 0.02, (n_vocab, N_EMBD)).astype(np.float32)
    embd[:, 0] = 1.0  # the constant that makes dimension 0 dominate after the norm
    output = rng.normal(0, 0.3, (n_vocab, N_EMBD)).astype(np.float32)
    # After the final RMS norm, dimension 0 is about sqrt(N_EMBD): scale to the logits.
    output[:, 0] = [_logit(token, symbols) / np.sqrt(N_EMBD) for token in vocab]
    tensors = {
        "token_embd.weight": embd,
        "output_norm.weight": np.ones(N_EMBD, dtype=np.float32),
        "output.weight": output,
    }
    for i in range(N_LAYERS):
        small = {
            "attn_q": (N_EMBD, N_EMBD), "attn_k": (N_EMBD, N_EMBD), "attn_v": (N_EMBD, N_EMBD),
            "attn_output": (N_EMBD, N_EMBD), "ffn_gate": (N_FF, N_EMBD),
            "ffn_up": (N_FF, N_EMBD), "ffn_down": (N_EMBD, N_FF),
        }  # fmt: skip
        for name, shape in small.items():
            tensors[f"blk.{i}.{name}.weight"] = rng.normal(0, 0.02, shape).astype(np.float32)
        tensors[f"blk.{i}.attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        tensors[f"blk.{i}.ffn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    return tensors


def write_model(path: Path, *, pooled: bool, seed: int = 29) -> Path:
    """A tiny llama at `path`: a chat model, or (`pooled`) an embedding model whose
    embeddings are the mean over the input's tokens (one vector of N_EMBD values)."""
    import gguf  # the optional `llama` extra

    tokens, types, merges = vocabulary()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("storyworker-tiny-embed" if pooled else "storyworker-tiny-chat")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEADS)
    writer.add_head_count_kv(N_HEADS)
    writer.add_rope_dimension_count(N_EMBD // N_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if pooled:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index(BOS))
    writer.add_eos_token_id(tokens.index(EOS))
    writer.add_add_bos_token(False)
    for name, tensor in _weights(tokens, np.random.default_rng(seed)).items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_models(directory: Path) -> tuple[Path, Path]:
    """The chat and embedding models in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    chat = write_model(directory / "tiny-chat.gguf", pooled=False)
    embed = write_model(directory / "tiny-embed.gguf", pooled=True, seed=30)
    return chat, embed


if __name__ == "__main__":
    for written in write_models(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(written)
