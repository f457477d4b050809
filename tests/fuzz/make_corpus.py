#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_safetensors into tests/fuzz/corpus/.

Seeds are valid safetensors files shaped like the fuzz target's tiny BERT
configuration (vocab 3, hidden 2, 1 layer, intermediate 2, 2 positions,
1 token type) in F32, F16 and BF16, with and without the "bert." prefix,
plus a few small edge cases. Re-run after changing that configuration.
"""
import json
import os
import struct
import sys

V, H, I, P, T, LAYERS = 3, 2, 2, 2, 1, 1
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}


def layout(legacy_ln=False):
    g, b = (".gamma", ".beta") if legacy_ln else (".weight", ".bias")
    out = [("embeddings.word_embeddings.weight", [V, H]),
           ("embeddings.position_embeddings.weight", [P, H]),
           ("embeddings.token_type_embeddings.weight", [T, H]),
           ("embeddings.LayerNorm" + g, [H]), ("embeddings.LayerNorm" + b, [H])]
    for layer in range(LAYERS):
        p = f"encoder.layer.{layer}."
        for part in ("query", "key", "value"):
            out += [(p + f"attention.self.{part}.weight", [H, H]),
                    (p + f"attention.self.{part}.bias", [H])]
        out += [(p + "attention.output.dense.weight", [H, H]),
                (p + "attention.output.dense.bias", [H]),
                (p + "attention.output.LayerNorm" + g, [H]),
                (p + "attention.output.LayerNorm" + b, [H]),
                (p + "intermediate.dense.weight", [I, H]),
                (p + "intermediate.dense.bias", [I]),
                (p + "output.dense.weight", [H, I]), (p + "output.dense.bias", [H]),
                (p + "output.LayerNorm" + g, [H]), (p + "output.LayerNorm" + b, [H])]
    return out


def count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def serialize(tensors, metadata=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def payload(dtype, n, seed):
    if dtype == "F32":
        return struct.pack(f"<{n}f", *[(seed + k) * 0.25 for k in range(n)])
    if dtype == "F16":
        return struct.pack(f"<{n}e", *[(seed + k) * 0.5 for k in range(n)])
    if dtype == "BF16":
        return b"".join(struct.pack("<f", (seed + k) * 0.5)[2:] for k in range(n))
    return bytes(SIZES[dtype] * n)


def model(dtype, prefix="", extras=False, legacy_ln=False):
    tensors = [(prefix + name, dtype, shape, payload(dtype, count(shape), i))
               for i, (name, shape) in enumerate(layout(legacy_ln))]
    if extras:
        tensors += [(prefix + "embeddings.position_ids", "I64", [1, P], payload("I64", P, 0)),
                    (prefix + "pooler.dense.bias", "F32", [H], payload("F32", H, 0))]
    return serialize(tensors, {"format": "pt"})


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out_dir, exist_ok=True)
    seeds = {
        "tiny_f32": model("F32"),
        "tiny_f16_bert_prefix": model("F16", "bert.", extras=True),
        "tiny_bf16_legacy_ln": model("BF16", legacy_ln=True),
        "scalar_and_empty": serialize([("s", "F32", [], payload("F32", 1, 1)),
                                       ("e", "F16", [0, 3], b""),
                                       ("b", "BOOL", [2], b"\x01\x00")]),
        "empty_header": serialize([]),
    }
    for name, data in seeds.items():
        with open(os.path.join(out_dir, name + ".safetensors"), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
