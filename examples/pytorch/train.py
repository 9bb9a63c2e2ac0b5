#!/usr/bin/env python3
"""One round of an AI Farm training task with PyTorch.

Run by the reference worker's `command` executor for a task with config.rounds; the
contract (environment in, safetensors and JSON lines out) is in README.md. Needs only
PyTorch (Debian: python3-torch); the data set is synthetic and generated from a fixed
seed, so nothing is downloaded and every rank sees the same data.

Try it alone:  AI_FARM_MODEL_OUT=/tmp/update.safetensors python3 train.py
"""
import json
import math
import os
import struct
import sys

import torch
from torch import nn

# ---- the data: 10 classes of Gaussian blobs in 32 dimensions ------------------------
DATA_SEED = 20240611
FEATURES = 32
CLASSES = 10
SAMPLES = 6000


def make_dataset():
    """Every machine builds the same data set: fixed centres, fixed noise, fixed order."""
    g = torch.Generator().manual_seed(DATA_SEED)
    centres = torch.randn(CLASSES, FEATURES, generator=g) * 0.45
    labels = torch.randint(0, CLASSES, (SAMPLES,), generator=g)
    x = centres[labels] + torch.randn(SAMPLES, FEATURES, generator=g)
    return x, labels


# ---- the model ----------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, hidden)
        self.fc2 = nn.Linear(hidden, CLASSES)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


# ---- safetensors, written and read by hand (Debian has no python3-safetensors) -------
DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
TORCH_DTYPES = {v: k for k, v in DTYPES.items()}


def save_safetensors(tensors, path):
    """Writes {name: tensor} as safetensors: u64 header length, JSON header, raw bytes."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        data = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_safetensors(path):
    """Reads a safetensors file into {name: tensor} (F32, F16, BF16)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        buf = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = TORCH_DTYPES[info["dtype"]]
        if dtype == torch.bfloat16:
            t = torch.frombuffer(bytearray(buf[begin:end]), dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.frombuffer(bytearray(buf[begin:end]), dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


# ---- one round ----------------------------------------------------------------------
def emit(obj):
    print(json.dumps(obj), flush=True)


def main():
    env = os.environ
    config = json.loads(env.get("AI_FARM_TASK_CONFIG") or "{}")
    out_path = env.get("AI_FARM_MODEL_OUT")
    if not out_path:
        print("AI_FARM_MODEL_OUT is not set: where should the update go?", file=sys.stderr)
        return 2
    in_path = env.get("AI_FARM_MODEL_IN") or None
    rnd = int(env.get("AI_FARM_ROUND", "1"))
    rounds = int(env.get("AI_FARM_ROUNDS", "1"))
    epochs = int(env.get("AI_FARM_EPOCHS", "1"))
    batch_size = int(env.get("AI_FARM_BATCH_SIZE", "32"))
    seed = int(env.get("AI_FARM_SEED", "0"))
    start = float(env.get("AI_FARM_SHARD_START", "0"))
    end = float(env.get("AI_FARM_SHARD_END", "1"))
    lr = float(config.get("lr", 0.05))
    hidden = int(config.get("hidden", 64))
    torch.set_num_threads(max(1, int(config.get("threads", 1))))

    # Every rank initialises the same weights from the seed; later rounds start from the
    # global model the worker downloaded.
    torch.manual_seed(seed)
    model = Net(hidden)
    if in_path:
        model.load_state_dict(load_safetensors(in_path))

    x, y = make_dataset()
    lo, hi = math.floor(start * SAMPLES), math.floor(end * SAMPLES)
    x, y = x[lo:hi], y[lo:hi]
    n = len(y)
    if n == 0:
        print(f"empty shard [{start}, {end})", file=sys.stderr)
        return 2

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed * 1000 + rnd * 10 + lo)
    batches = math.ceil(n / batch_size)
    emit({"progress": 0, "metrics": {"round": rnd, "rounds": rounds}})
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=order)
        loss_sum, correct = 0.0, 0
        for b in range(batches):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            logits = model(x[idx])
            loss = loss_fn(logits, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
            done = b + 1
            if done % 20 == 0 or done == batches:
                seen = min(n, done * batch_size)
                emit({
                    "progress": 100 * (epoch * batches + done) / (epochs * batches),
                    "metrics": {
                        "loss": loss_sum / seen,
                        "accuracy": correct / seen,
                        "current_epoch": epoch + 1,
                        "total_epochs": epochs,
                    },
                })
    save_safetensors(model.state_dict(), out_path)
    # num_samples weighs this update in FedAvg; the other numbers become the round's metrics.
    emit({"result": {"num_samples": n, "loss": loss_sum / n, "accuracy": correct / n}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
