#!/usr/bin/python3
"""PyTorch vs embedpool's BERT encoder on the all-MiniLM-L6-v2 shape.

Runs a random-weight torch BERT (vocab 30522, H 384, 6 layers, 12 heads,
I 1536; the same math as HF BertModel + mean pooling + Normalize) under
torch.inference_mode at each thread count, on the same batch shapes as
bert_encoder_bench: `batch` x `seq` tokens, `batch` mixed lengths (padded to
the longest, with an attention mask, as HF does), and one `single`-token
sentence; torch's OpenBLAS runs the same number of threads (reported as
"blas_threads"). Then runs the C++ bench as a subprocess and prints both plus the
ratios as one JSON object.

    /usr/bin/python3 tools/bench/bert_vs_torch.py --bench build/tools/bert_encoder_bench
        [--threads 1,2] [--batch 32] [--seq 128] [--single 16] [--seconds 3]
"""

import argparse
import ctypes
import json
import math
import os
import subprocess
import time

import torch
import torch.nn.functional as F

VOCAB, H, LAYERS, HEADS, INTER, MAX_POS = 30522, 384, 6, 12, 1536, 512


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.query = torch.nn.Linear(H, H)
        self.key = torch.nn.Linear(H, H)
        self.value = torch.nn.Linear(H, H)
        self.attn_out = torch.nn.Linear(H, H)
        self.attn_ln = torch.nn.LayerNorm(H, eps=1e-12)
        self.ffn_in = torch.nn.Linear(H, INTER)
        self.ffn_out = torch.nn.Linear(INTER, H)
        self.ffn_ln = torch.nn.LayerNorm(H, eps=1e-12)

    def forward(self, x, add_mask):
        b, n, _ = x.shape
        d = H // HEADS

        def split(t):
            return t.view(b, n, HEADS, d).permute(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + add_mask
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        ctx = ctx.permute(0, 2, 1, 3).reshape(b, n, H)
        x = self.attn_ln(self.attn_out(ctx) + x)
        return self.ffn_ln(self.ffn_out(F.gelu(self.ffn_in(x))) + x)


class Bert(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.word = torch.nn.Embedding(VOCAB, H)
        self.pos = torch.nn.Embedding(MAX_POS, H)
        self.tok_type = torch.nn.Embedding(2, H)
        self.emb_ln = torch.nn.LayerNorm(H, eps=1e-12)
        self.layers = torch.nn.ModuleList([Layer() for _ in range(LAYERS)])

    def forward(self, ids, mask):
        b, n = ids.shape
        pos = torch.arange(n).unsqueeze(0).expand(b, n)
        x = self.emb_ln(self.word(ids) + self.pos(pos) + self.tok_type(torch.zeros_like(ids)))
        add_mask = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, add_mask)
        m = mask.unsqueeze(-1).float()
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


def torch_blas():
    """The BLAS torch calls for Linear (Debian's libblas.so.3, OpenBLAS here).
    torch.set_num_threads does not reach it: left alone, OpenBLAS runs one
    thread per core even in torch's "1 thread" runs."""
    try:
        lib = ctypes.CDLL("libblas.so.3")
        lib.openblas_get_num_threads.restype = ctypes.c_int
        return lib if hasattr(lib, "openblas_set_num_threads") else None
    except OSError:
        return None


def padded(lengths, gen):
    n = max(lengths)
    ids = torch.zeros(len(lengths), n, dtype=torch.long)
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for r, length in enumerate(lengths):
        ids[r, :length] = torch.randint(1000, VOCAB, (length,), generator=gen)
        mask[r, :length] = 1
    return ids, mask


def measure(fn, seconds, min_runs):
    fn()  # warm-up
    samples = []
    start = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return {"median_ms": 1e3 * samples[len(samples) // 2],
            "p90_ms": 1e3 * samples[min(len(samples) - 1, len(samples) * 9 // 10)],
            "runs": len(samples)}


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--bench", default=os.path.join(here, "..", "..", "build", "tools",
                                                    "bert_encoder_bench"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--single", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    def run_cpp(n):
        return json.loads(subprocess.run(
            [args.bench, f"--threads={n}", f"--batch={args.batch}", f"--seq={args.seq}",
             f"--single={args.single}", f"--seconds={args.seconds}"],
            check=True, capture_output=True, text=True).stdout)

    torch.manual_seed(1)
    model = Bert().eval()
    blas = torch_blas()
    results, cpp_results, cpp = [], [], None
    # Alternate engines per thread count so both see similar machine load.
    for n in threads:
        cpp = run_cpp(n)
        cpp_results += cpp["results"]
        gen = torch.Generator().manual_seed(1)
        full = padded([args.seq] * args.batch, gen)
        mixed = padded(cpp["mixed_lengths"], gen)  # the C++ bench's lengths
        single = padded([args.single], gen)
        torch.set_num_threads(n)
        if blas is not None:
            blas.openblas_set_num_threads(n)
        with torch.inference_mode():
            tb = measure(lambda: model(*full), args.seconds, 3)
            tm = measure(lambda: model(*mixed), args.seconds, 3)
            ts = measure(lambda: model(*single), args.seconds / 2, 20)
        tb["sentences_per_s"] = args.batch / (tb["median_ms"] / 1e3)
        tm["sentences_per_s"] = args.batch / (tm["median_ms"] / 1e3)
        results.append({"threads": n,
                        "blas_threads": blas.openblas_get_num_threads() if blas else None,
                        "batch": tb, "mixed": tm, "single": ts})
    cpp["results"] = cpp_results

    comparison = []
    for t, c in zip(results, cpp["results"]):
        comparison.append({
            "threads": t["threads"],
            "batch_throughput_ratio": c["batch"]["sentences_per_s"] / t["batch"]["sentences_per_s"],
            "mixed_throughput_ratio": c["mixed"]["sentences_per_s"] / t["mixed"]["sentences_per_s"],
            "single_latency_ratio": c["single"]["median_ms"] / t["single"]["median_ms"],
        })
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(json.dumps({"torch": {"version": torch.__version__, "results": results},
                      "embedpool": cpp, "comparison": comparison,
                      "targets": {"batch_throughput_ratio": ">= 1.5",
                                  "single_latency_ratio": "<= 0.5"},
                      "loadavg_end": load}, indent=1))


if __name__ == "__main__":
    main()
