#!/usr/bin/python3
"""Writes a random-weight sentence-transformers directory of the
all-MiniLM-L6-v2 shape (vocab 30522, hidden 384, 6 layers, 12 heads,
intermediate 1536, max 512 positions, mean pooling + Normalize,
max_seq_length 256) for benchmarks: config.json, vocab.txt (Hugging Face's
bert-base-uncased vocabulary, the one MiniLM uses), model.safetensors (F32,
about 90 MB), modules.json, 1_Pooling/config.json, sentence_bert_config.json.
The weights are random, so the vectors mean nothing; the work per sentence is
the real model's. Needs only numpy.

    /usr/bin/python3 tools/bench/make_minilm_dir.py OUT_DIR [--vocab FILE] [--seed N]
"""

import argparse
import json
import os
import shutil
import struct

import numpy as np

VOCAB, H, LAYERS, HEADS, INTER, MAX_POS, MAX_SEQ = 30522, 384, 6, 12, 1536, 512, 256
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_VOCAB = os.path.join(ROOT, "tests", "data", "tokenizer", "bert-base-uncased-vocab.txt")


def tensors(rng):
    """HF BertModel tensor names -> float32 arrays (torch's [out x in] Linear)."""
    def linear(out, inp):
        bound = 1.0 / np.sqrt(inp)
        return (rng.uniform(-bound, bound, (out, inp)).astype(np.float32),
                rng.uniform(-bound, bound, (out,)).astype(np.float32))

    t = {
        "embeddings.word_embeddings.weight": rng.normal(0, 0.02, (VOCAB, H)),
        "embeddings.position_embeddings.weight": rng.normal(0, 0.02, (MAX_POS, H)),
        "embeddings.token_type_embeddings.weight": rng.normal(0, 0.02, (2, H)),
        "embeddings.LayerNorm.weight": np.ones(H),
        "embeddings.LayerNorm.bias": np.zeros(H),
    }
    for layer in range(LAYERS):
        p = f"encoder.layer.{layer}."
        for name, out, inp in [("attention.self.query", H, H), ("attention.self.key", H, H),
                               ("attention.self.value", H, H),
                               ("attention.output.dense", H, H),
                               ("intermediate.dense", INTER, H), ("output.dense", H, INTER)]:
            t[p + name + ".weight"], t[p + name + ".bias"] = linear(out, inp)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + ln + ".weight"], t[p + ln + ".bias"] = np.ones(H), np.zeros(H)
    return {k: np.ascontiguousarray(v, dtype="<f4") for k, v in t.items()}


def write_safetensors(path, arrays):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in sorted(arrays):
        size = arrays[name].nbytes
        header[name] = {"dtype": "F32", "shape": list(arrays[name].shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in sorted(arrays):
            f.write(arrays[name].tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--vocab", default=DEFAULT_VOCAB)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with open(args.vocab, encoding="utf-8") as f:
        if sum(1 for _ in f) != VOCAB:
            raise SystemExit(f"{args.vocab}: expected {VOCAB} tokens")
    os.makedirs(os.path.join(args.out, "1_Pooling"), exist_ok=True)
    shutil.copyfile(args.vocab, os.path.join(args.out, "vocab.txt"))
    write_safetensors(os.path.join(args.out, "model.safetensors"),
                      tensors(np.random.default_rng(args.seed)))
    files = {
        "config.json": {
            "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
            "hidden_size": H, "intermediate_size": INTER, "layer_norm_eps": 1e-12,
            "max_position_embeddings": MAX_POS, "num_attention_heads": HEADS,
            "num_hidden_layers": LAYERS, "position_embedding_type": "absolute",
            "type_vocab_size": 2, "vocab_size": VOCAB},
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize",
             "type": "sentence_transformers.models.Normalize"}],
        "1_Pooling/config.json": {
            "word_embedding_dimension": H, "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False},
        "sentence_bert_config.json": {"max_seq_length": MAX_SEQ, "do_lower_case": False},
    }
    for name, obj in files.items():
        with open(os.path.join(args.out, name), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
