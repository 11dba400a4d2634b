#!/usr/bin/env python3
"""Tiny, fully deterministic trainer for runctl's examples and E2E tests.

Python 3.8+ standard library only; the default run takes well under a second.

Model: softmax regression (or, with --hidden H > 0, a one-hidden-layer tanh MLP) trained with plain
minibatch SGD in pure Python. Data: a synthetic "mnist-like" set (10 classes of noisy 8x8 binary
prototypes, generated from --data-seed), or a dataset file from RUNCTL_DATA_DIR / --data-file.

Dataset file formats (chosen by extension):
  *.csv    one sample a line: ``label,x0,x1,...`` (a first line that does not parse is a header)
  *.jsonl  one JSON object a line: ``{"label": 3, "pixels": [0.0, 0.5, ...]}``
Every sample must have the same number of features; labels are ints 0..C-1. With --data-file unset
the trainer looks in RUNCTL_DATA_DIR for train.csv / train.jsonl (and test.csv / test.jsonl; without
a test file every 5th training sample is held out). `--export-dataset DIR` writes the synthetic set
as DIR/train.csv and DIR/test.csv (floats written with repr, so training on the export gives
bit-identical weights) and exits.

Determinism: the minibatch of step N is drawn from random.Random("runctl-batch:<seed>:<N>"), so the
data order depends only on (seed, step); the weights are initialised from --seed; all arithmetic is
done in a fixed order. A checkpoint therefore only needs the weights and the step, and a run that is
interrupted and resumed ends with bit-identical weights to an uninterrupted one.

See training/README.md for the full contract (env vars, argv, checkpoints, signals, output lines).
"""

import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import sys
import time

FORMAT = "runctl-mnist-e2e/1"

# name -> (kind, default). Names are kebab-case; argv/env keys may also be snake_case or camelCase.
SPEC = {
    "lr": ("pos_float", 0.5),
    "steps": ("pos_int", 200),
    "batch-size": ("pos_int", 32),
    "seed": ("int", 0),
    "checkpoint-every": ("nonneg_int", 50),  # 0 = only the final / SIGTERM checkpoint
    "sleep-per-step": ("nonneg_float", 0.0),
    "fail-at-step": ("opt_pos_int", None),
    "fail-mode": (("always", "fresh"), "always"),  # fresh = only when not resuming
    "echo-hparams": ("bool", False),
    "hidden": ("nonneg_int", 0),
    "data-seed": ("int", 1234),
    "data-file": ("opt_str", None),
    "train-size": ("pos_int", 2000),  # synthetic data only
    "test-size": ("pos_int", 500),  # synthetic data only
    "export-dataset": ("opt_str", None),
    "ballast-mb": ("nonneg_int", 0),  # add an N MiB ballast.bin to each checkpoint (big-upload tests)
}
BOOL_KEYS = {k for k, (kind, _) in SPEC.items() if kind == "bool"}
USAGE = ("usage: train_mnist_e2e.py [--lr F>0] [--steps N>0] [--batch-size N>0] [--seed N] "
         "[--checkpoint-every N>=0] [--sleep-per-step S>=0] [--fail-at-step N] [--fail-mode always|fresh] "
         "[--echo-hparams true] [--hidden N>=0] [--data-seed N] [--data-file PATH] [--export-dataset DIR] "
         "[--ballast-mb N>=0]")

EXIT_BAD_HPARAMS = 2
EXIT_FAIL_AT_STEP = 3
EXIT_BAD_RESUME = 4


class UsageError(Exception):
    pass


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def err(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------------------------------
# Hyperparameters: argv `--key value` pairs (verbatim strings) over RUNCTL_HPARAMS (a JSON object).
# --------------------------------------------------------------------------------------------------


def normalize_key(key):
    key = re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", key)
    return key.replace("_", "-").lower()


def parse_argv_pairs(argv):
    """Split argv into (key, value) pairs. A value is the next token verbatim, whatever it looks like
    (it may start with '-' or be empty); `--key=value` is accepted too. Known boolean flags may appear
    bare (value True) when followed by another `--` token or the end of argv."""
    pairs = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--") or tok == "--":
            raise UsageError("unexpected argument %r: expected --key value pairs" % tok)
        body = tok[2:]
        if "=" in body:
            key, value = body.split("=", 1)
            i += 1
        else:
            key = body
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if normalize_key(key) in BOOL_KEYS and (nxt is None or nxt.startswith("--")):
                value = True
                i += 1
            elif nxt is None:
                raise UsageError("missing value for --%s" % key)
            else:
                value = nxt
                i += 2
        if not key:
            raise UsageError("empty hyperparameter name in %r" % tok)
        pairs.append((key, value))
    return pairs


def truthy(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return False


def convert(name, kind, value):
    """Convert a raw value (argv string or JSON value) to the typed value; raise ValueError."""
    if isinstance(kind, tuple):
        if isinstance(value, str) and value in kind:
            return value
        raise ValueError("must be one of %s" % ", ".join(kind))
    optional = kind.startswith("opt_")
    base = kind[4:] if optional else kind
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none"))):
        return None
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError("must be true or false")
    if base == "str":
        if isinstance(value, str):
            return value
        raise ValueError("must be a string")
    if base.endswith("int"):
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        if isinstance(value, int):
            v = value
        elif isinstance(value, float) and value.is_integer():
            v = int(value)
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            v = int(value)
        else:
            raise ValueError("must be an integer")
        if base == "pos_int" and v <= 0:
            raise ValueError("must be > 0")
        if base == "nonneg_int" and v < 0:
            raise ValueError("must be >= 0")
        return v
    if base.endswith("float"):
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number")
        if not math.isfinite(v):
            raise ValueError("must be finite")
        if base == "pos_float" and v <= 0:
            raise ValueError("must be > 0")
        if base == "nonneg_float" and v < 0:
            raise ValueError("must be >= 0")
        if base == "unit_float" and not 0 <= v < 1:
            raise ValueError("must be >= 0 and < 1")
        return v
    raise AssertionError(kind)


def load_hparams(argv, environ):
    """Return the effective hyperparameters. Prints RUNCTL_HPARAMS_ECHO when asked (before any
    validation, so tests can see hostile values even when they are rejected). Exits 2 on bad input."""
    errors = []
    try:
        pairs = parse_argv_pairs(argv)
    except UsageError as e:
        pairs = []
        errors.append(str(e))
    env_raw = environ.get("RUNCTL_HPARAMS")
    env = None
    if env_raw is not None and env_raw.strip() != "":
        try:
            env = json.loads(env_raw)
        except ValueError as e:
            errors.append("RUNCTL_HPARAMS is not valid JSON: %s" % e)
        else:
            if not isinstance(env, dict):
                errors.append("RUNCTL_HPARAMS must be a JSON object, got %s" % type(env).__name__)
                env = None

    argv_map = {}
    for key, value in pairs:
        argv_map[key] = value
    raw = {}  # normalized known name -> (source, raw value); argv wins over env
    for key, value in (env or {}).items():
        if normalize_key(key) in SPEC:
            raw[normalize_key(key)] = ("RUNCTL_HPARAMS[%s]" % json.dumps(key), value)
    for key, value in pairs:
        if normalize_key(key) in SPEC:
            raw[normalize_key(key)] = ("--%s" % key, value)

    echo_raw = raw.get("echo-hparams", (None, False))[1]
    if truthy(echo_raw):
        out("RUNCTL_HPARAMS_ECHO " + json.dumps(
            {"argv": argv_map, "argv_list": list(argv), "env": env, "env_raw": env_raw},
            sort_keys=True))

    hp = {}
    for name, (kind, default) in SPEC.items():
        if name not in raw:
            hp[name] = default
            continue
        source, value = raw[name]
        try:
            hp[name] = convert(name, kind, value)
        except ValueError as e:
            errors.append("invalid hyperparameter %s = %s: %s" % (source, json.dumps(value), e))
    if errors:
        for e in errors:
            err("error: " + e)
        err(USAGE)
        sys.exit(EXIT_BAD_HPARAMS)
    unknown = sorted({k for k in list(argv_map) + list(env or {}) if normalize_key(k) not in SPEC})
    if unknown:
        err("note: ignoring unknown hyperparameters: %s" % ", ".join(json.dumps(k) for k in unknown))
    return hp


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def synthetic_dataset(data_seed, n_train, n_test):
    rng = random.Random("runctl-data:%d" % data_seed)
    classes, side = 10, 8
    protos = [[1.0 if rng.random() < 0.35 else 0.0 for _ in range(side * side)] for _ in range(classes)]

    def sample():
        label = rng.randrange(classes)
        x = []
        for p in protos[label]:
            v = 1.0 - p if rng.random() < 0.22 else p
            v += rng.gauss(0.0, 0.45)
            x.append(min(1.0, max(0.0, v)))
        return label, x

    train = [sample() for _ in range(n_train)]
    test = [sample() for _ in range(n_test)]
    return train, test


def read_dataset_file(path):
    rows = []
    with open(path, "r", encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    rows.append((int(obj["label"]), [float(v) for v in obj["pixels"]]))
                except (ValueError, KeyError, TypeError) as e:
                    raise UsageError("%s:%d: bad JSON line (%s)" % (path, n, e))
        else:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.split(",")
                try:
                    rows.append((int(parts[0]), [float(v) for v in parts[1:]]))
                except ValueError:
                    if n == 1 and not rows:
                        continue  # header
                    raise UsageError("%s:%d: expected label,x0,x1,..." % (path, n))
    return rows


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_data(hp, environ):
    data_dir = environ.get("RUNCTL_DATA_DIR") or None
    train_path = test_path = None
    if hp["data-file"]:
        train_path = hp["data-file"]  # relative: to RUNCTL_DATA_DIR when it is there, else to the cwd
        if not os.path.isabs(train_path) and data_dir and os.path.exists(os.path.join(data_dir, train_path)):
            train_path = os.path.join(data_dir, train_path)
        if not os.path.isfile(train_path):
            raise UsageError("--data-file %r not found" % hp["data-file"])
    elif data_dir and os.path.isdir(data_dir):
        for ext in (".csv", ".jsonl"):
            if os.path.isfile(os.path.join(data_dir, "train" + ext)):
                train_path = os.path.join(data_dir, "train" + ext)
                break
    if train_path:
        base, ext = os.path.splitext(train_path)
        if os.path.basename(base) == "train":
            for e in (ext, ".csv", ".jsonl"):
                cand = os.path.join(os.path.dirname(train_path), "test" + e)
                if os.path.isfile(cand):
                    test_path = cand
                    break
        rows = read_dataset_file(train_path)
        if test_path:
            train, test = rows, read_dataset_file(test_path)
        else:
            train = [r for i, r in enumerate(rows) if i % 5 != 4]
            test = [r for i, r in enumerate(rows) if i % 5 == 4]
        digest = hashlib.sha256()
        digest.update(file_sha256(train_path).encode())
        if test_path:
            digest.update(file_sha256(test_path).encode())
        source = train_path + ((" + " + test_path) if test_path else "")
        info = {"source": "file", "path": source, "sha256": digest.hexdigest()}
    else:
        train, test = synthetic_dataset(hp["data-seed"], hp["train-size"], hp["test-size"])
        info = {"source": "synthetic", "data_seed": hp["data-seed"]}
    if not train or not test:
        raise UsageError("dataset has no training or no test samples")
    n_features = len(train[0][1])
    if n_features == 0 or any(len(x) != n_features for _, x in train + test):
        raise UsageError("every sample must have the same (non-zero) number of features")
    labels = [y for y, _ in train + test]
    if min(labels) < 0:
        raise UsageError("labels must be >= 0")
    info.update({"train": len(train), "test": len(test), "features": n_features,
                 "classes": max(2, max(labels) + 1)})
    return train, test, info


def export_dataset(hp, directory):
    train, test = synthetic_dataset(hp["data-seed"], hp["train-size"], hp["test-size"])
    os.makedirs(directory, exist_ok=True)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        path = os.path.join(directory, name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            for y, x in rows:
                f.write("%d,%s\n" % (y, ",".join(repr(v) for v in x)))
        os.replace(path + ".tmp", path)
    out("EXPORTED_DATASET %s train=%d test=%d" % (directory, len(train), len(test)))


# --------------------------------------------------------------------------------------------------
# Model: logits = W2 . h + b2, h = tanh(W1 . x + b1) (or h = x when hidden == 0)
# --------------------------------------------------------------------------------------------------

PARAM_ORDER = ("W1", "b1", "W2", "b2")


def init_weights(seed, n_in, n_hidden, n_out):
    rng = random.Random("runctl-init:%d" % seed)
    w = {}
    if n_hidden > 0:
        s = 1.0 / math.sqrt(n_in)
        w["W1"] = [[rng.gauss(0.0, s) for _ in range(n_in)] for _ in range(n_hidden)]
        w["b1"] = [0.0] * n_hidden
        n_in = n_hidden
    s = 0.01 if n_hidden == 0 else 1.0 / math.sqrt(n_in)
    w["W2"] = [[rng.gauss(0.0, s) for _ in range(n_in)] for _ in range(n_out)]
    w["b2"] = [0.0] * n_out
    return w


def weights_sha256(w):
    """sha256 over every parameter as little-endian float64, in PARAM_ORDER, rows in order."""
    h = hashlib.sha256()
    for name in PARAM_ORDER:
        if name not in w:
            continue
        rows = w[name] if isinstance(w[name][0], list) else [w[name]]
        for row in rows:
            h.update(struct.pack("<%dd" % len(row), *row))
    return h.hexdigest()


def dot(a, b):
    # Plain left-to-right float addition: the builtin sum() is compensated from Python 3.12 on,
    # which would make the weights depend on the interpreter version.
    acc = 0.0
    for ai, bi in zip(a, b):
        acc += ai * bi
    return acc


def forward(w, x):
    if "W1" in w:
        h = [math.tanh(dot(row, x) + b) for row, b in zip(w["W1"], w["b1"])]
    else:
        h = x
    logits = [dot(row, h) + b for row, b in zip(w["W2"], w["b2"])]
    m = max(logits)
    exps = [math.exp(z - m) for z in logits]
    total = 0.0
    for e in exps:
        total += e
    return h, [e / total for e in exps]


def batch_indices(seed, step, n, batch_size):
    rng = random.Random("runctl-batch:%d:%d" % (seed, step))
    return rng.sample(range(n), min(batch_size, n))


def train_step(w, data, idx, lr):
    """One SGD step on the minibatch; returns (mean cross-entropy, accuracy) before the update."""
    hidden = "W1" in w
    gW2 = [[0.0] * len(row) for row in w["W2"]]
    gb2 = [0.0] * len(w["b2"])
    if hidden:
        gW1 = [[0.0] * len(row) for row in w["W1"]]
        gb1 = [0.0] * len(w["b1"])
    loss = 0.0
    correct = 0
    for i in idx:
        y, x = data[i]
        h, p = forward(w, x)
        loss -= math.log(max(p[y], 1e-300))
        if max(range(len(p)), key=p.__getitem__) == y:
            correct += 1
        d = list(p)
        d[y] -= 1.0
        for k, dk in enumerate(d):
            if dk != 0.0:
                row = gW2[k]
                for j, hj in enumerate(h):
                    row[j] += dk * hj
            gb2[k] += dk
        if hidden:
            for j, hj in enumerate(h):
                dh = 0.0
                for k, dk in enumerate(d):
                    dh += dk * w["W2"][k][j]
                dh *= 1.0 - hj * hj
                row = gW1[j]
                for t, xt in enumerate(x):
                    row[t] += dh * xt
                gb1[j] += dh
    scale = lr / len(idx)
    updates = [("W2", gW2), ("b2", gb2)] + ([("W1", gW1), ("b1", gb1)] if hidden else [])
    for name, g in updates:
        param = w[name]
        if isinstance(param[0], list):
            for row, grow in zip(param, g):
                for j in range(len(row)):
                    row[j] -= scale * grow[j]
        else:
            for j in range(len(param)):
                param[j] -= scale * g[j]
    return loss / len(idx), correct / len(idx)


def accuracy(w, data):
    correct = 0
    for y, x in data:
        _, p = forward(w, x)
        if max(range(len(p)), key=p.__getitem__) == y:
            correct += 1
    return correct / len(data)


# --------------------------------------------------------------------------------------------------
# Checkpoints: <dir>/.step-%08d.tmp/ -> rename -> <dir>/step-%08d/, then <dir>/step-%08d.done
# --------------------------------------------------------------------------------------------------


def fsync_path(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file(path, data):
    with open(path, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_ballast(path, mib, step):
    """Deterministic filler bytes (they depend on the step), to make checkpoints big on purpose."""
    block = hashlib.sha256(b"runctl-ballast:%d" % step).digest() * (65536 // 32)
    with open(path, "wb") as f:
        for _ in range(mib * 16):
            f.write(block)


def save_checkpoint(ckpt_dir, step, payload, ballast_mb=0):
    name = "step-%08d" % step
    final = os.path.join(ckpt_dir, name)
    tmp = os.path.join(ckpt_dir, "." + name + ".tmp")
    done = final + ".done"
    os.makedirs(ckpt_dir, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    write_file(os.path.join(tmp, "model.json"), json.dumps(payload, sort_keys=True))
    if ballast_mb:
        write_ballast(os.path.join(tmp, "ballast.bin"), ballast_mb, step)
    fsync_path(tmp)
    if os.path.lexists(done):
        os.remove(done)
    if os.path.lexists(final):  # re-saving a step (e.g. a fresh run in a used dir): swap it out
        old = os.path.join(ckpt_dir, "." + name + ".old.tmp")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    done_tmp = os.path.join(ckpt_dir, "." + name + ".done.tmp")
    write_file(done_tmp, json.dumps({"step": step}))
    os.replace(done_tmp, done)
    fsync_path(ckpt_dir)
    out("CHECKPOINT_SAVED %d %s" % (step, final))
    return final


def find_resume_file(path):
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        direct = os.path.join(path, "model.json")
        if os.path.isfile(direct):
            return direct
        steps = []
        for entry in os.listdir(path):
            m = re.fullmatch(r"step-(\d+)", entry)
            if m and os.path.isfile(os.path.join(path, entry, "model.json")):
                steps.append((int(m.group(1)), entry))
        if steps:
            return os.path.join(path, max(steps)[1], "model.json")
    return None


# --------------------------------------------------------------------------------------------------


def main():
    stop = {"requested": False}

    def on_sigterm(signum, frame):
        if not stop["requested"]:
            stop["requested"] = True
            err("received SIGTERM: finishing the current step, then checkpointing")

    signal.signal(signal.SIGTERM, on_sigterm)  # first thing: a SIGTERM during startup is not lost

    environ = os.environ
    hp = load_hparams(sys.argv[1:], environ)
    if hp["export-dataset"]:
        export_dataset(hp, hp["export-dataset"])
        return 0

    out("RUN_INFO run_id=%s node_rank=%s num_nodes=%s master_addr=%s" % (
        environ.get("RUNCTL_RUN_ID", "-"), environ.get("RUNCTL_NODE_RANK", "0"),
        environ.get("RUNCTL_NUM_NODES", "1"), environ.get("RUNCTL_MASTER_ADDR", "-")))
    out("HPARAMS " + json.dumps(hp, sort_keys=True))

    try:
        train, test, data_info = load_data(hp, environ)
    except (UsageError, OSError) as e:
        err("error: cannot load the dataset: %s" % e)
        return EXIT_BAD_HPARAMS
    out("DATASET " + json.dumps(data_info, sort_keys=True))

    ckpt_dir = environ.get("RUNCTL_CHECKPOINT_DIR") or "checkpoints"
    out_dir = environ.get("RUNCTL_OUTPUT_DIR") or None
    resume_from = environ.get("RUNCTL_RESUME_FROM") or None

    weights = init_weights(hp["seed"], data_info["features"], hp["hidden"], data_info["classes"])
    start_step = 1
    last_saved = None
    if resume_from:
        path = find_resume_file(resume_from)
        if path is None:
            err("error: RUNCTL_RESUME_FROM=%s: no model.json checkpoint there" % resume_from)
            return EXIT_BAD_RESUME
        try:
            with open(path, "r", encoding="utf-8") as f:
                ckpt = json.load(f)
            if ckpt.get("format") != FORMAT:
                raise ValueError("format is %r, expected %r" % (ckpt.get("format"), FORMAT))
            loaded = ckpt["weights"]
            if weights_sha256(loaded) != ckpt["weights_sha256"]:
                raise ValueError("weights do not match their sha256")
            if sorted(loaded) != sorted(weights) or any(
                    len(loaded[k]) != len(weights[k])
                    or (isinstance(weights[k][0], list) and len(loaded[k][0]) != len(weights[k][0]))
                    for k in weights):
                raise ValueError("weights have a different shape than this model (hidden/features/classes)")
            step = int(ckpt["step"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            err("error: cannot resume from %s: %s" % (path, e))
            return EXIT_BAD_RESUME
        for key in ("seed", "batch-size", "lr", "hidden", "data-seed"):
            if ckpt.get("hparams", {}).get(key) != hp[key]:
                err("warning: resuming with %s=%r but the checkpoint used %r; the result will differ "
                    "from an uninterrupted run" % (key, hp[key], ckpt.get("hparams", {}).get(key)))
        weights = loaded
        start_step = step + 1
        last_saved = step
        out("RESUMED_FROM_STEP %d" % step)
    out("START_STEP %d" % start_step)

    def checkpoint(step):
        payload = {
            "format": FORMAT,
            "step": step,
            "weights": weights,
            "weights_sha256": weights_sha256(weights),
            "hparams": hp,
            "dataset": data_info,
            "rng": {"scheme": "per-step", "batch": "random.Random('runctl-batch:%d:<step>')" % hp["seed"],
                    "init": "random.Random('runctl-init:%d')" % hp["seed"], "carried_state": None},
            "run_id": environ.get("RUNCTL_RUN_ID"),
        }
        save_checkpoint(ckpt_dir, step, payload, hp["ballast-mb"])

    resumed = resume_from is not None
    step = start_step - 1
    for step in range(start_step, hp["steps"] + 1):
        if hp["fail-at-step"] == step and (hp["fail-mode"] == "always" or not resumed):
            err("FAIL_AT_STEP %d: exiting with code %d as requested" % (step, EXIT_FAIL_AT_STEP))
            return EXIT_FAIL_AT_STEP
        idx = batch_indices(hp["seed"], step, len(train), hp["batch-size"])
        loss, acc = train_step(weights, train, idx, hp["lr"])
        out("RUNCTL_METRIC " + json.dumps({"step": step, "loss": round(loss, 6), "accuracy": round(acc, 6)}))
        if hp["checkpoint-every"] and step % hp["checkpoint-every"] == 0:
            checkpoint(step)
            last_saved = step
        deadline = time.monotonic() + hp["sleep-per-step"]
        while not stop["requested"]:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.05))
        if stop["requested"]:
            if last_saved != step:
                checkpoint(step)
            out("SIGTERM_CHECKPOINT %d" % step)
            return 0

    final_step = max(step, start_step - 1)
    if last_saved != final_step:
        checkpoint(final_step)
    digest = weights_sha256(weights)
    test_acc = accuracy(weights, test)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "final_model.json")
        write_file(path + ".tmp", json.dumps({
            "format": FORMAT, "step": final_step, "weights": weights, "weights_sha256": digest,
            "test_accuracy": test_acc, "hparams": hp, "dataset": data_info}, sort_keys=True))
        os.replace(path + ".tmp", path)
    out("TEST_ACCURACY %.4f" % test_acc)
    out("FINAL_STEP %d weights_sha256=%s" % (final_step, digest))
    out("TRAINING_DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
