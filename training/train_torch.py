#!/usr/bin/env python3
"""The same trainer contract as train.py, with PyTorch: a small CNN on scikit-learn's bundled 8x8
handwritten digits (1,797 images, no download). Needs torch and scikit-learn; on Debian
python3-torch and python3-sklearn, through /usr/bin/python3 or a venv made with
--system-site-packages. The default 1000 steps take about 5-15 s on one CPU core (importing torch
is 1-2 s of it) and reach about 0.98 test accuracy; it uses the GPU when torch sees one.

On the CPU it is deterministic (one thread, deterministic algorithms, step N's minibatch and dropout
drawn from a seed made of (seed, N), the optimizer state in the checkpoint), so an interrupted and
resumed run ends with exactly the weights of one that was not.
"""

import json
import os
import signal
import sys

DEFAULTS = {"lr": 0.001, "steps": 1000, "batch-size": 64, "checkpoint-every": 250, "seed": 0}


def hyperparameters(argv):
    """DEFAULTS, overridden by `--name=value` arguments (typed like the default)."""
    hp = dict(DEFAULTS)
    for arg in argv:
        name, sep, value = arg[2:].partition("=")
        try:
            if not arg.startswith("--") or not sep or name not in hp:
                raise ValueError("expected --name=value with a name in " + ", ".join(hp))
            hp[name] = type(DEFAULTS[name])(value)
        except ValueError as e:
            print("error: bad argument %r: %s" % (arg, e), file=sys.stderr)
            sys.exit(2)
    return hp


def main():
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))  # first: a stop is never lost
    hp = hyperparameters(sys.argv[1:])  # before importing torch: a bad argument fails at once

    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.use_deterministic_algorithms(True)

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    test, train = order[:360], order[360:]
    x_train, y_train, x_test, y_test = x[train].to(device), y[train].to(device), x[test].to(device), y[test].to(device)

    torch.manual_seed(hp["seed"])
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.1), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"])

    ckpt_dir = os.environ.get("RUNCTL_CHECKPOINT_DIR", "checkpoints")
    step = 0
    resume_from = os.environ.get("RUNCTL_RESUME_FROM")
    if resume_from:  # the checkpoint folder this script wrote in an earlier run
        state = torch.load(os.path.join(resume_from, "checkpoint.pt"), map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print("RESUMED_FROM_STEP %d" % step, flush=True)
    print("START_STEP %d on %s" % (step + 1, device), flush=True)

    def save_checkpoint():
        """<dir>/.step-N.tmp/ -> rename -> <dir>/step-N/, then <dir>/step-N.done: runctl commits it."""
        name = "step-%08d" % step
        tmp, final = os.path.join(ckpt_dir, "." + name + ".tmp"), os.path.join(ckpt_dir, name)
        os.makedirs(tmp, exist_ok=True)
        torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
                   os.path.join(tmp, "checkpoint.pt"))
        os.rename(tmp, final)
        with open(final + ".done", "w") as f:
            json.dump({"step": step}, f)
        print("CHECKPOINT_SAVED %d %s" % (step, final), flush=True)

    model.train()
    batches = torch.Generator()
    while step < hp["steps"]:
        step += 1
        batches.manual_seed(hp["seed"] * 1_000_003 + step)  # step N's data depends only on (seed, N)
        torch.manual_seed(hp["seed"] * 1_000_003 + step)  # and so do its dropout masks
        idx = torch.randperm(len(x_train), generator=batches)[:hp["batch-size"]].to(device)
        logits = model(x_train[idx])
        loss = F.cross_entropy(logits, y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        accuracy = (logits.argmax(1) == y_train[idx]).float().mean().item()
        print("RUNCTL_METRIC " + json.dumps({"step": step, "loss": round(loss.item(), 6), "accuracy": round(accuracy, 6)}), flush=True)
        if step % max(hp["checkpoint-every"], 1) == 0 or step == hp["steps"] or stopping:
            save_checkpoint()
        if stopping:
            print("SIGTERM_CHECKPOINT %d" % step, flush=True)
            return 0  # exit 0: runctl commits the checkpoint just saved

    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print("TEST_ACCURACY %.4f" % accuracy, flush=True)
    print("TRAINING_DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
