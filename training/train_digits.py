#!/usr/bin/env python3
"""A real PyTorch model for runctl's examples: a small CNN (or MLP) on scikit-learn's bundled 8x8
digits dataset (sklearn.datasets.load_digits: 1797 images, no download). Same contract as
train_mnist_e2e.py (see training/README.md); needs torch and scikit-learn (Debian: python3-torch and
python3-sklearn, i.e. /usr/bin/python3 or a venv made with --system-site-packages).

Default run: 2000 Adam steps of batch 64 on 1 CPU thread: ~8-10 s on an idle 2-core machine
(about 1.5 s of it importing torch), test accuracy 0.994.

Determinism: one CPU thread, torch.use_deterministic_algorithms(True), and every random draw of step N
(the minibatch and the dropout masks) comes from a seed derived only from (seed, N); the learning rate
is a pure function of (step, steps) (cosine). A checkpoint holds the model and optimizer state
(torch.save), so a run interrupted and resumed ends with bit-identical weights to an uninterrupted one
(on the same torch build and device).
"""

import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import time

FORMAT = "runctl-digits/1"

SPEC = {
    "lr": ("pos_float", 0.001),
    "steps": ("pos_int", 2000),
    "batch-size": ("pos_int", 64),
    "seed": ("int", 0),
    "checkpoint-every": ("nonneg_int", 500),  # 0 = only the final / SIGTERM checkpoint
    "sleep-per-step": ("nonneg_float", 0.0),
    "fail-at-step": ("opt_pos_int", None),
    "fail-mode": (("always", "fresh"), "always"),
    "echo-hparams": ("bool", False),
    "model": (("cnn", "mlp"), "cnn"),
    "hidden": ("pos_int", 64),
    "dropout": ("unit_float", 0.1),
    "weight-decay": ("nonneg_float", 0.0),
    "lr-schedule": (("cosine", "constant"), "cosine"),
    "data-seed": ("int", 0),
    "test-size": ("pos_int", 360),
    "threads": ("pos_int", 1),
    "device": (("cpu", "cuda", "auto"), "cpu"),
}
BOOL_KEYS = {k for k, (kind, _) in SPEC.items() if kind == "bool"}
USAGE = ("usage: train_digits.py [--lr F>0] [--steps N>0] [--batch-size N>0] [--seed N] "
         "[--checkpoint-every N>=0] [--sleep-per-step S>=0] [--fail-at-step N] [--fail-mode always|fresh] "
         "[--echo-hparams true] [--model cnn|mlp] [--hidden N>0] [--dropout 0<=F<1] [--weight-decay F>=0] "
         "[--lr-schedule cosine|constant] [--data-seed N] [--test-size N] [--threads N] [--device cpu|cuda|auto]")

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


def save_checkpoint(ckpt_dir, step, write_into):
    """<dir>/.step-%08d.tmp/ (files written and fsynced) -> rename -> <dir>/step-%08d/, then the
    marker <dir>/step-%08d.done = {"step": N} (itself written to a temporary name and renamed)."""
    name = "step-%08d" % step
    final = os.path.join(ckpt_dir, name)
    tmp = os.path.join(ckpt_dir, "." + name + ".tmp")
    done = final + ".done"
    os.makedirs(ckpt_dir, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    write_into(tmp)
    for entry in os.listdir(tmp):
        fsync_path(os.path.join(tmp, entry))
    fsync_path(tmp)
    if os.path.lexists(done):
        os.remove(done)
    if os.path.lexists(final):
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
        direct = os.path.join(path, "checkpoint.pt")
        if os.path.isfile(direct):
            return direct
        steps = []
        for entry in os.listdir(path):
            m = re.fullmatch(r"step-(\d+)", entry)
            if m and os.path.isfile(os.path.join(path, entry, "checkpoint.pt")):
                steps.append((int(m.group(1)), entry))
        if steps:
            return os.path.join(path, max(steps)[1], "checkpoint.pt")
    return None


def step_seed(seed, step):
    digest = hashlib.sha256(("runctl-step:%d:%d" % (seed, step)).encode()).hexdigest()
    return int(digest[:15], 16)


def lr_at(hp, step):
    if hp["lr-schedule"] == "constant":
        return hp["lr"]
    return hp["lr"] * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / hp["steps"]))


def main():
    stop = {"requested": False}

    def on_sigterm(signum, frame):
        if not stop["requested"]:
            stop["requested"] = True
            err("received SIGTERM: finishing the current step, then checkpointing")

    signal.signal(signal.SIGTERM, on_sigterm)  # first thing: a SIGTERM during startup is not lost

    environ = os.environ
    hp = load_hparams(sys.argv[1:], environ)  # before importing torch: bad input fails fast

    if hp["device"] != "cpu":
        environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        from sklearn.datasets import load_digits
    except ImportError as e:
        err("error: train_digits.py needs PyTorch and scikit-learn (%s). On Debian: apt install "
            "python3-torch python3-sklearn, then use /usr/bin/python3 or a venv with "
            "--system-site-packages." % e)
        return 1

    torch.set_num_threads(hp["threads"])
    if hp["device"] == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif hp["device"] == "cuda" and not torch.cuda.is_available():
        err("error: --device cuda but torch.cuda.is_available() is false")
        return EXIT_BAD_HPARAMS
    else:
        device = hp["device"]
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
    else:  # a CUDA op without a deterministic kernel warns instead of failing the run
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False

    out("RUN_INFO run_id=%s node_rank=%s num_nodes=%s master_addr=%s" % (
        environ.get("RUNCTL_RUN_ID", "-"), environ.get("RUNCTL_NODE_RANK", "0"),
        environ.get("RUNCTL_NUM_NODES", "1"), environ.get("RUNCTL_MASTER_ADDR", "-")))
    out("HPARAMS " + json.dumps(hp, sort_keys=True))
    out("TORCH version=%s device=%s threads=%d" % (torch.__version__, device, torch.get_num_threads()))

    digits = load_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    Y = torch.tensor(digits.target, dtype=torch.long)
    if hp["test-size"] >= len(X):
        err("error: --test-size must be smaller than the dataset (%d)" % len(X))
        return EXIT_BAD_HPARAMS
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(hp["data-seed"]))
    test_idx, train_idx = perm[:hp["test-size"]], perm[hp["test-size"]:]
    X_train, Y_train = X[train_idx].to(device), Y[train_idx].to(device)
    X_test, Y_test = X[test_idx].to(device), Y[test_idx].to(device)
    data_sha = hashlib.sha256(X.numpy().tobytes() + Y.numpy().tobytes() + perm.numpy().tobytes()).hexdigest()
    out("DATASET " + json.dumps({"source": "sklearn.load_digits", "train": len(train_idx),
                                 "test": len(test_idx), "features": 64, "classes": 10,
                                 "sha256": data_sha}, sort_keys=True))

    torch.manual_seed(hp["seed"])
    if hp["model"] == "cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(hp["dropout"]),
            nn.Linear(32 * 4 * 4, hp["hidden"]), nn.ReLU(), nn.Dropout(hp["dropout"]),
            nn.Linear(hp["hidden"], 10))
    else:
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(64, hp["hidden"]), nn.ReLU(), nn.Dropout(hp["dropout"]),
            nn.Linear(hp["hidden"], hp["hidden"]), nn.ReLU(), nn.Dropout(hp["dropout"]),
            nn.Linear(hp["hidden"], 10))
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight-decay"])

    def weights_sha256():
        """sha256 over (name, raw little-endian float32 bytes) of every state_dict tensor, in order."""
        h = hashlib.sha256()
        for name, t in model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    ckpt_dir = environ.get("RUNCTL_CHECKPOINT_DIR") or "checkpoints"
    out_dir = environ.get("RUNCTL_OUTPUT_DIR") or None
    resume_from = environ.get("RUNCTL_RESUME_FROM") or None

    def torch_load(path):
        # Our own checkpoint (it holds Python floats, which torch 1.13's weights_only loader refuses).
        try:
            return torch.load(path, map_location=device, weights_only=False)
        except TypeError:  # torch without the weights_only argument
            return torch.load(path, map_location=device)

    start_step = 1
    last_saved = None
    if resume_from:
        path = find_resume_file(resume_from)
        if path is None:
            err("error: RUNCTL_RESUME_FROM=%s: no checkpoint.pt there" % resume_from)
            return EXIT_BAD_RESUME
        try:
            ckpt = torch_load(path)
            if ckpt.get("format") != FORMAT:
                raise ValueError("format is %r, expected %r" % (ckpt.get("format"), FORMAT))
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if weights_sha256() != ckpt["weights_sha256"]:
                raise ValueError("weights do not match their sha256")
            step = int(ckpt["step"])
        except Exception as e:  # corrupt file, wrong model shape, ...
            err("error: cannot resume from %s: %s: %s" % (path, type(e).__name__, e))
            return EXIT_BAD_RESUME
        saved_hp = json.loads(ckpt.get("hparams_json", "{}"))
        for key in ("seed", "batch-size", "lr", "lr-schedule", "steps", "model", "hidden", "dropout",
                    "weight-decay", "data-seed", "test-size"):
            if saved_hp.get(key) != hp[key]:
                err("warning: resuming with %s=%r but the checkpoint used %r; the result will differ "
                    "from an uninterrupted run" % (key, hp[key], saved_hp.get(key)))
        start_step = step + 1
        last_saved = step
        out("RESUMED_FROM_STEP %d" % step)
    out("START_STEP %d" % start_step)

    def checkpoint(step):
        digest = weights_sha256()

        def write_into(tmp):
            torch.save({"format": FORMAT, "step": step, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "weights_sha256": digest,
                        "hparams_json": json.dumps(hp, sort_keys=True)},
                       os.path.join(tmp, "checkpoint.pt"))
            write_file(os.path.join(tmp, "meta.json"), json.dumps(
                {"format": FORMAT, "step": step, "weights_sha256": digest, "hparams": hp,
                 "torch": torch.__version__, "run_id": environ.get("RUNCTL_RUN_ID")}, sort_keys=True))

        save_checkpoint(ckpt_dir, step, write_into)

    resumed = resume_from is not None
    n_train = len(train_idx)
    gen = torch.Generator()
    step = start_step - 1
    model.train()
    for step in range(start_step, hp["steps"] + 1):
        if hp["fail-at-step"] == step and (hp["fail-mode"] == "always" or not resumed):
            err("FAIL_AT_STEP %d: exiting with code %d as requested" % (step, EXIT_FAIL_AT_STEP))
            return EXIT_FAIL_AT_STEP
        s = step_seed(hp["seed"], step)
        gen.manual_seed(s)
        idx = torch.randperm(n_train, generator=gen)[:hp["batch-size"]].to(device)
        torch.manual_seed(s)  # dropout masks of this step
        for group in optimizer.param_groups:
            group["lr"] = lr_at(hp, step)
        logits = model(X_train[idx])
        loss = F.cross_entropy(logits, Y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        acc = (logits.argmax(1) == Y_train[idx]).float().mean().item()
        out("RUNCTL_METRIC " + json.dumps({"step": step, "loss": round(loss.item(), 6), "accuracy": round(acc, 6)}))
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
    digest = weights_sha256()
    model.eval()
    with torch.no_grad():
        test_acc = (model(X_test).argmax(1) == Y_test).float().mean().item()
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(out_dir, ".final_model.pt.tmp"))
        os.replace(os.path.join(out_dir, ".final_model.pt.tmp"), os.path.join(out_dir, "final_model.pt"))
        path = os.path.join(out_dir, "final_model.json")
        write_file(path + ".tmp", json.dumps({
            "format": FORMAT, "step": final_step, "weights_file": "final_model.pt",
            "weights_sha256": digest, "test_accuracy": test_acc, "hparams": hp}, sort_keys=True))
        os.replace(path + ".tmp", path)
    out("TEST_ACCURACY %.4f" % test_acc)
    out("FINAL_STEP %d weights_sha256=%s" % (final_step, digest))
    out("TRAINING_DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
