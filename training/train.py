#!/usr/bin/env python3
"""A runctl trainer to copy: replace make_data() and the model, keep the rest.

It trains softmax regression on a small generated dataset (10 classes of noisy 8x8 images) with
minibatch SGD, in pure Python 3.8+ with no dependencies (the quickstart's 60 steps take under a
second). It follows the whole trainer contract of training/README.md:

- hyperparameters arrive as `--name=value` arguments, one per hyperparameter;
- `RUNCTL_METRIC {json}` lines on stdout become metric events;
- checkpoints go to RUNCTL_CHECKPOINT_DIR: written under a temporary name, renamed, then marked
  finished by `<name>.done`, so a crash mid-save never leaves a half checkpoint behind;
- RUNCTL_RESUME_FROM, when set, is the checkpoint to continue from;
- SIGTERM (cancel, spot interruption, time limit): finish the step, save, exit 0.

It is deterministic: step N's minibatch depends only on (seed, N), so a run that is interrupted and
resumed ends with exactly the weights of a run that was not.
"""

import json
import math
import os
import random
import signal
import sys

DEFAULTS = {"lr": 0.5, "steps": 100, "batch-size": 32, "checkpoint-every": 20, "seed": 0}


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


def make_data(seed, n):
    """n (label, pixels) samples: each class is a fixed random 8x8 pattern with pixels flipped and noise."""
    rng = random.Random("data:%d" % seed)
    patterns = [[float(rng.random() < 0.35) for _ in range(64)] for _ in range(10)]
    data = []
    for _ in range(n):
        label = rng.randrange(10)
        pixels = [min(1.0, max(0.0, (1.0 - p if rng.random() < 0.2 else p) + rng.gauss(0.0, 0.4))) for p in patterns[label]]
        data.append((label, pixels))
    return data


def predict(w, x):
    """Class probabilities: softmax(W x + b). w["W"] is 10 rows of 64 weights, w["b"] 10 biases."""
    logits = [sum(wi * xi for wi, xi in zip(row, x)) + b for row, b in zip(w["W"], w["b"])]
    top = max(logits)
    exps = [math.exp(z - top) for z in logits]
    total = sum(exps)
    return [e / total for e in exps]


def train_step(w, batch, lr):
    """One SGD step on the batch; returns its mean loss and accuracy (before the update)."""
    grad_w = [[0.0] * 64 for _ in range(10)]
    grad_b = [0.0] * 10
    loss = correct = 0
    for label, x in batch:
        p = predict(w, x)
        loss -= math.log(max(p[label], 1e-12))
        correct += p.index(max(p)) == label
        p[label] -= 1.0  # d(loss)/d(logits)
        for k in range(10):
            grad_b[k] += p[k]
            grad_w[k] = [g + p[k] * xi for g, xi in zip(grad_w[k], x)]
    scale = lr / len(batch)
    w["W"] = [[wi - scale * g for wi, g in zip(row, grow)] for row, grow in zip(w["W"], grad_w)]
    w["b"] = [b - scale * g for b, g in zip(w["b"], grad_b)]
    return loss / len(batch), correct / len(batch)


def save_checkpoint(ckpt_dir, step, state):
    """<dir>/.step-N.tmp/ -> rename -> <dir>/step-N/, then <dir>/step-N.done: runctl commits it."""
    name = "step-%08d" % step
    tmp, final = os.path.join(ckpt_dir, "." + name + ".tmp"), os.path.join(ckpt_dir, name)
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "model.json"), "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the name says the checkpoint exists
    os.rename(tmp, final)
    with open(final + ".done", "w") as f:
        json.dump({"step": step}, f)
    print("CHECKPOINT_SAVED %d %s" % (step, final), flush=True)


def main():
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))  # first: a stop is never lost

    hp = hyperparameters(sys.argv[1:])
    ckpt_dir = os.environ.get("RUNCTL_CHECKPOINT_DIR", "checkpoints")
    data = make_data(seed=1234, n=2500)
    train, test = data[:2000], data[2000:]

    w, step = {"W": [[0.0] * 64 for _ in range(10)], "b": [0.0] * 10}, 0
    resume_from = os.environ.get("RUNCTL_RESUME_FROM")
    if resume_from:  # the checkpoint folder this script wrote in an earlier run
        with open(os.path.join(resume_from, "model.json")) as f:
            state = json.load(f)
        w, step = state["weights"], state["step"]
        print("RESUMED_FROM_STEP %d" % step, flush=True)
    print("START_STEP %d" % (step + 1), flush=True)

    while step < hp["steps"]:
        step += 1
        batch = random.Random("batch:%d:%d" % (hp["seed"], step)).sample(train, hp["batch-size"])
        loss, acc = train_step(w, batch, hp["lr"])
        print("RUNCTL_METRIC " + json.dumps({"step": step, "loss": round(loss, 6), "accuracy": round(acc, 6)}), flush=True)
        if step % max(hp["checkpoint-every"], 1) == 0 or step == hp["steps"] or stopping:
            save_checkpoint(ckpt_dir, step, {"step": step, "weights": w, "hyperparameters": hp})
        if stopping:
            print("SIGTERM_CHECKPOINT %d" % step, flush=True)
            return 0  # exit 0: runctl commits the checkpoint just saved

    accuracy = sum(p.index(max(p)) == label for label, p in ((y, predict(w, x)) for y, x in test)) / len(test)
    print("TEST_ACCURACY %.4f" % accuracy, flush=True)
    print("TRAINING_DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
