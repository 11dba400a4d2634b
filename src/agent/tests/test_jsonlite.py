"""jsonlite: the same text as json.dumps(separators=(",", ":")) and the same values as json.loads,
through _json and through its json fallback; and a sync start that imports neither json nor re."""

import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

from runctl_agent import jsonlite

SAMPLES = [
    {},
    [],
    "",
    0,
    -0.0,
    1e100,
    2.5,
    10 ** 30,
    True,
    None,
    "quote \" backslash \\ slash / tab \t newline \n nul \x00 del \x7f",
    "caf\u00e9 \u2603 \U0001f600 \ud800",
    {"files": {"a/b.py": {"size": 3, "mode": 420, "sha256": "ab" * 32}, "__proto__": {"size": 0}}},
    {"1": [1, [2, [3, {"x": None}]]], "k": [True, False]},
]


def _random_value(rng, depth=0):
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.randrange(-(2 ** 40), 2 ** 40)
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return "".join(chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0, 0x20), rng.randrange(0x80, 0x3000)])) for _ in range(rng.randrange(8)))
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {"k%d-%s" % (i, chr(rng.randrange(0x20, 0x3000))): _random_value(rng, depth + 1) for i in range(rng.randrange(4))}


class JsonliteTest(unittest.TestCase):
    def check_both_ways(self):
        rng = random.Random(1)
        values = SAMPLES + [_random_value(rng) for _ in range(300)]
        for v in values:
            text = json.dumps(v, separators=(",", ":"))
            self.assertEqual(jsonlite.dumps(v), text)
            self.assertEqual(jsonlite.loads(text), json.loads(text))
            self.assertEqual(jsonlite.loads(" \n\t" + json.dumps(v, indent=2) + "\r\n "), json.loads(text))
        self.assertEqual(jsonlite.dumps([float("nan"), float("inf"), -float("inf")]), "[NaN,Infinity,-Infinity]")
        nan, inf, minf = jsonlite.loads("[NaN, Infinity, -Infinity]")
        self.assertTrue(math.isnan(nan))
        self.assertEqual((inf, minf), (float("inf"), -float("inf")))
        for bad in ["", "   ", "{", "{}x", "[1,]", '"a\x01"', "nul", "{'a': 1}", "[1] [2]"]:
            with self.assertRaises(ValueError, msg=repr(bad)):
                jsonlite.loads(bad)
        with self.assertRaises(TypeError):
            jsonlite.dumps({"a": object()})
        with self.assertRaises(TypeError):
            jsonlite.dumps({("tuple", "key"): 1})
        loop = []
        loop.append(loop)
        with self.assertRaises(ValueError):
            jsonlite.dumps(loop)
        self.assertEqual(jsonlite.dumps([1]), "[1]")  # a failed call leaves nothing behind

    def test_through_the_accelerator(self):
        self.assertIsNotNone(jsonlite._scan, "CPython has _json: the fast path must be in use")
        self.check_both_ways()

    def test_through_the_json_fallback(self):
        with mock.patch.object(jsonlite, "_scan", None):
            self.check_both_ways()

    def test_a_sync_start_imports_neither_json_nor_re(self):
        # A fresh interpreter, as the agent is started: `sync` of an empty folder with stdin closed.
        root = os.path.dirname(os.path.dirname(os.path.abspath(jsonlite.__file__)))
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        code = (
            "import sys; sys.path.insert(0, %r); from runctl_agent.cli import main; main(['sync', %r]); "
            "sys.stderr.write(' '.join(m for m in ('json', 're', 'hashlib', 'datetime', 'secrets', 'enum') if m in sys.modules))" % (root, folder)
        )
        r = subprocess.run([sys.executable, "-S", "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
        self.assertEqual(r.stderr.decode().strip(), "")
        lines = r.stdout.decode().splitlines()
        self.assertEqual([json.loads(line) for line in lines], [{"files": {}}, {"ok": True, "written": 0, "deleted": 0}])


if __name__ == "__main__":
    unittest.main()
