#!/usr/bin/python3
"""Training-speed baseline: the same LLaMA-style model, batch and AdamW step as `outq train`,
written in Python with Debian's python3-torch (the same LibTorch 1.13 as outq links).

Reads the model/train sections of an outq TOML config and a prepared data directory's train.bin,
runs warm-up steps, then times N steps and prints one JSON line. With --profile it also prints
where the time goes (operator table from torch.profiler), which applies to both implementations
since they call the same LibTorch kernels.

Usage: /usr/bin/python3 bench/train_step_torch.py CONFIG.toml DATA_DIR [--steps N] [--profile]
"""
import argparse, json, math, struct, sys, time, tomllib
import numpy as np
import torch
import torch.nn.functional as F


def load_shard(path):
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:8] == b"OQSHARD\0", f"{path}: not an outq token shard"
    n = struct.unpack("<I", raw[12:16])[0]
    meta = json.loads(raw[16:16 + n])
    offset = (16 + n + 63) // 64 * 64
    dtype = np.uint16 if meta["dtype"] == "u16" else np.uint32
    return np.frombuffer(raw, dtype=dtype, offset=offset, count=meta["num_tokens"]).astype(np.int64)


class Block(torch.nn.Module):
    def __init__(self, c, h, kv, inter, eps):
        super().__init__()
        d = c // h
        self.h, self.kv, self.d, self.eps = h, kv, d, eps
        self.q = torch.nn.Linear(c, h * d, bias=False)
        self.k = torch.nn.Linear(c, kv * d, bias=False)
        self.v = torch.nn.Linear(c, kv * d, bias=False)
        self.o = torch.nn.Linear(h * d, c, bias=False)
        self.gate = torch.nn.Linear(c, inter, bias=False)
        self.up = torch.nn.Linear(c, inter, bias=False)
        self.down = torch.nn.Linear(inter, c, bias=False)
        self.n1 = torch.nn.Parameter(torch.ones(c))
        self.n2 = torch.nn.Parameter(torch.ones(c))

    def norm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def forward(self, x, cos, sin, mask):
        B, T, C = x.shape
        h = self.norm(x, self.n1)
        q = self.q(h).view(B, T, self.h, self.d).transpose(1, 2)
        k = self.k(h).view(B, T, self.kv, self.d).transpose(1, 2)
        v = self.v(h).view(B, T, self.kv, self.d).transpose(1, 2)
        rot = lambda t: torch.cat([-t[..., self.d // 2:], t[..., :self.d // 2]], -1)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        if self.kv != self.h:
            k = k.repeat_interleave(self.h // self.kv, 1)
            v = v.repeat_interleave(self.h // self.kv, 1)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(self.d)
        s = s.masked_fill(mask, float("-inf"))
        a = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.o(a)
        h = self.norm(x, self.n2)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        c, h = m["hidden_size"], m["num_attention_heads"]
        self.emb = torch.nn.Embedding(m["vocab_size"], c)
        self.blocks = torch.nn.ModuleList(
            Block(c, h, m.get("num_key_value_heads", h), m["intermediate_size"], m.get("rms_norm_eps", 1e-5))
            for _ in range(m["num_hidden_layers"]))
        self.nf = torch.nn.Parameter(torch.ones(c))
        self.head = torch.nn.Linear(c, m["vocab_size"], bias=False)
        d = c // h
        inv = m.get("rope_theta", 10000.0) ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.outer(torch.arange(m["max_position_embeddings"], dtype=torch.float64), inv)
        full = torch.cat([ang, ang], -1)
        self.cos, self.sin = full.cos().float(), full.sin().float()
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, 0.0, 0.02)

    def forward(self, tokens):
        T = tokens.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        x = self.emb(tokens)
        for b in self.blocks:
            x = b(x, self.cos[:T], self.sin[:T], mask)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.nf
        return self.head(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("data_dir")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    cfg = tomllib.load(open(args.config, "rb"))
    m, t = cfg["model"], cfg["train"]
    for k, v in [("hidden_size", 256), ("intermediate_size", 1024), ("num_hidden_layers", 4),
                 ("num_attention_heads", 4), ("vocab_size", 4096), ("max_position_embeddings", 256)]:
        m.setdefault(k, v)
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    tokens = load_shard(f"{args.data_dir}/train.bin")
    B, T = t.get("batch_size", 16), t.get("seq_len", 256)
    model = Model(m)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("emb")]
    other = [p for n, p in model.named_parameters() if not (p.dim() == 2 and not n.startswith("emb"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.get("weight_decay", 0.1)},
                             {"params": other, "weight_decay": 0.0}],
                            lr=t.get("lr", 2e-3), betas=(t.get("beta1", 0.9), t.get("beta2", 0.95)))
    rng = np.random.default_rng(1)

    def step():
        starts = rng.integers(0, len(tokens) - T, size=B)
        w = torch.from_numpy(np.stack([np.concatenate([[1], tokens[s:s + T]]) for s in starts]))
        logits = model(w[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.get("grad_clip", 1.0))
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    dt = time.perf_counter() - t0
    print(json.dumps({"impl": "python3-torch", "torch": torch.__version__, "steps": args.steps,
                      "tokens_per_s": args.steps * B * T / dt, "seconds": dt, "last_loss": loss}))
    if args.profile:
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18), file=sys.stderr)


if __name__ == "__main__":
    main()
