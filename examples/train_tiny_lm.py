"""A tiny GPT-style model trained on a task that needs the whole context, on
one process with PyTorch's SDPA, or across ranks with ringattn.ring_attention
-- and the two reach the same loss at every step.

The task (copy): a sequence of S tokens whose second half repeats its
first half, so predicting a token of the second half needs the token S/2
positions back. The model: token embeddings, 2 pre-norm blocks of width
256 with 8 query heads and 2 key/value heads (GQA) and rotary positions,
causal attention, an MLP. The loss: mean cross-entropy over the second
half.

    python examples/train_tiny_lm.py                                  # one process, SDPA
    torchrun --nproc-per-node 2 examples/train_tiny_lm.py --ring      # 2 ranks, ring attention

Ring mode: every rank builds the same model and data (same seeds), keeps
its zigzag shard of the sequence (ringattn.shard), and rotates with
positions from ringattn.positions, so that each token sees what it sees in
one process. The loss of a step is the sum over all ranks' tokens divided
by the global count; gradients are summed over the ranks (all_reduce), so
every rank takes the same optimizer step. --losses FILE writes the losses
as JSON (rank 0).
"""
import argparse
import json
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F


def rotary(x, pos, base=10000.0):
    """x [B, S, H, D] rotated by the angles of the global positions pos [S]."""
    half = x.shape[-1] // 2
    freq = base ** (-torch.arange(half, dtype=torch.float64) / half)
    angle = (pos.double()[:, None] * freq[None, :]).to(x.dtype)  # [S, D/2]
    cos, sin = angle.cos()[None, :, None, :], angle.sin()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(torch.nn.Module):
    def __init__(self, width, heads, kv_heads):
        super().__init__()
        self.heads, self.kv_heads, self.dim = heads, kv_heads, width // heads
        self.norm1 = torch.nn.RMSNorm(width)
        self.qkv = torch.nn.Linear(width, (heads + 2 * kv_heads) * self.dim, bias=False)
        self.proj = torch.nn.Linear(width, width, bias=False)
        self.norm2 = torch.nn.RMSNorm(width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                       torch.nn.Linear(4 * width, width))

    def forward(self, x, pos, attend):
        B, S, _ = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, S, self.heads + 2 * self.kv_heads, self.dim)
        q, k, v = qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=2)
        q, k = rotary(q, pos), rotary(k, pos)
        x = x + self.proj(attend(q, k, v).reshape(B, S, -1))
        return x + self.mlp(self.norm2(x))


class TinyLM(torch.nn.Module):
    def __init__(self, vocab, width=256, layers=2, heads=8, kv_heads=2):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads, kv_heads) for _ in range(layers))
        self.norm = torch.nn.RMSNorm(width)
        self.head = torch.nn.Linear(width, vocab, bias=False)

    def forward(self, tokens, pos, attend):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, pos, attend)
        return self.head(self.norm(x))


def sdpa(q, k, v):
    """PyTorch's SDPA, [B, S, H, D] in and out, GQA by repeating KV heads."""
    rep = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=True)
    return out.transpose(1, 2)


def copy_batch(step, batch, seq, vocab, seed):
    """Tokens [B, S + 1]: S/2 random tokens, then the same again (plus one)."""
    g = torch.Generator().manual_seed(seed * 1000003 + step)
    half = (seq + 2) // 2
    first = torch.randint(1, vocab, (batch, half), generator=g)
    return torch.cat([first, first], dim=1)[:, : seq + 1]


def train(args):
    ring = args.ring
    if ring:
        import ringattn

        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    torch.manual_seed(args.seed)
    model = TinyLM(args.vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    S = args.seq
    if ring:
        pos = ringattn.positions(S, sharding="zigzag")
        attend = lambda q, k, v: ringattn.ring_attention(q, k, v, causal=True, sharding="zigzag")
    else:
        pos = torch.arange(S)
        attend = sdpa
    # The loss covers the predictions of the second half: targets at global
    # positions >= S/2 (input position i predicts token i + 1).
    weight_full = (torch.arange(S) + 1 >= (S + 2) // 2).float()
    count = weight_full.sum()
    losses = []
    t0 = time.monotonic()
    for step in range(args.steps):
        data = copy_batch(step, args.batch, S, args.vocab, args.seed)
        inputs, targets, weight = data[:, :-1], data[:, 1:], weight_full.expand(args.batch, S)
        if ring:
            inputs, targets, weight = (ringattn.shard(t, sharding="zigzag")
                                       for t in (inputs, targets, weight))
        logits = model(inputs, pos, attend)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        loss = (ce * weight.flatten()).sum() / (count * args.batch)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        total = loss.detach().clone()
        if ring:
            for p in model.parameters():
                dist.all_reduce(p.grad)
            dist.all_reduce(total)
        opt.step()
        losses.append(total.item())
        if rank == 0:
            print(f"step {step:3d}  loss {losses[-1]:.6f}  ({time.monotonic() - t0:.1f} s)",
                  flush=True)
    if rank == 0 and args.losses:
        with open(args.losses, "w") as f:
            json.dump({"mode": f"ring W={world}" if ring else "sdpa", "losses": losses}, f)
    if ring:
        dist.destroy_process_group()
    return losses


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ring", action="store_true", help="ring attention across torchrun's ranks")
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--losses", default="", help="write the losses to this JSON file (rank 0)")
    train(p.parse_args())


if __name__ == "__main__":
    main()
