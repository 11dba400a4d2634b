"""spec.normalize_spec / normalize_interruption / check_launch_secrets: defaults and rejections."""

import os
import unittest

from runctl_agent.constants import UsageError
from runctl_agent.spec import check_launch_secrets, normalize_interruption, normalize_spec

RUN = "/srv/runctl/runs/r1"


class NormalizeSpecDefaults(unittest.TestCase):
    def test_minimal_spec_gets_every_default(self):
        s = normalize_spec({"argv": ["train.py"]}, RUN)
        self.assertEqual(s["runId"], "r1")
        self.assertEqual(s["runDir"], RUN)
        self.assertEqual(s["workdir"], RUN + "/code")
        self.assertEqual(s["python"], "python3")
        self.assertEqual(s["env"], {})
        self.assertEqual(s["hyperparams"], {})
        self.assertEqual(s["outputDir"], RUN + "/outputs")
        self.assertEqual(s["checkpoints"], {"dir": RUN + "/checkpoints", "storage": None, "keep": None, "settleMs": 2000, "pollMs": 500})
        self.assertEqual(s["limits"], {"maxDurationMs": None, "graceMs": 30000, "budget": None})
        self.assertIsNone(s["setup"])
        self.assertEqual(s["data"], [])
        self.assertIsNone(s["shutdown"])
        self.assertIsNone(s["interruption"])

    def test_paths_are_relative_to_the_workdir(self):
        s = normalize_spec({"argv": ["t.py"], "workdir": "w", "outputDir": "out", "dataDir": "/abs/data",
                            "checkpoints": {"dir": "ck", "keep": 2}, "data": [{"source": {"kind": "dir"}, "to": "d"}]}, RUN)
        self.assertEqual(s["workdir"], RUN + "/w")
        self.assertEqual(s["outputDir"], RUN + "/w/out")
        self.assertEqual(s["dataDir"], "/abs/data")
        self.assertEqual(s["checkpoints"]["dir"], RUN + "/w/ck")
        self.assertEqual(s["checkpoints"]["keep"], 2)
        self.assertEqual(s["data"], [{"source": {"kind": "dir"}, "to": RUN + "/w/d"}])

    def test_a_script_that_looks_like_an_option_becomes_a_path(self):
        self.assertEqual(normalize_spec({"argv": ["-V.py", "-x"]}, RUN)["argv"], ["./-V.py", "-x"])

    def test_setup_defaults(self):
        s = normalize_spec({"argv": ["t.py"], "setup": {"pip": {"extraArgs": [1]}}}, RUN)
        self.assertEqual(s["setup"]["pip"], {"findLinks": [], "noIndex": False, "indexUrl": None, "extraArgs": ["1"]})
        self.assertEqual(s["setup"]["commands"], [])
        self.assertEqual(s["setup"]["venvRoot"], "/srv/runctl/venvs")
        self.assertFalse(s["setup"]["systemSitePackages"])

    def test_budget_and_shutdown(self):
        s = normalize_spec({"argv": ["t.py"], "limits": {"budget": {"maxUsd": 2, "hourlyUsd": 1}},
                            "shutdown": {"command": ["poweroff"], "afterRunMs": 5}}, RUN)
        self.assertEqual(s["limits"]["budget"], {"maxUsd": 2.0, "hourlyUsd": 1.0, "spentUsd": 0.0})
        self.assertEqual(s["shutdown"], {"command": ["poweroff"], "afterRunMs": 5, "cancelBootPowerOff": None})


class NormalizeSpecRejections(unittest.TestCase):
    CASES = [
        ("not an object", [], "spec must be a JSON object"),
        ("no argv", {}, "spec.argv"),
        ("empty argv", {"argv": []}, "spec.argv"),
        ("argv of numbers", {"argv": [1]}, "spec.argv"),
        ("runId with a slash", {"argv": ["t"], "runId": "a/b"}, "spec.runId"),
        ("runId dot-dot", {"argv": ["t"], "runId": ".."}, "spec.runId"),
        ("env not an object", {"argv": ["t"], "env": "x=1"}, "spec.env"),
        ("negative keep", {"argv": ["t"], "checkpoints": {"keep": -1}}, "spec.checkpoints.keep"),
        ("bool settleMs", {"argv": ["t"], "checkpoints": {"settleMs": True}}, "spec.checkpoints.settleMs"),
        ("string graceMs", {"argv": ["t"], "limits": {"graceMs": "5"}}, "spec.limits.graceMs"),
        ("negative budget", {"argv": ["t"], "limits": {"budget": {"maxUsd": -1}}}, "spec.limits.budget.maxUsd"),
        ("data entry without to", {"argv": ["t"], "data": [{"source": {}}]}, "spec.data entries"),
        ("relative venvRoot", {"argv": ["t"], "setup": {"venvRoot": "v"}}, "spec.setup.venvRoot"),
        ("setup commands not strings", {"argv": ["t"], "setup": {"commands": [1]}}, "spec.setup.commands"),
        ("shutdown without command", {"argv": ["t"], "shutdown": {}}, "spec.shutdown"),
        ("outputs without storage", {"argv": ["t"], "outputs": {}}, "spec.outputs"),
        ("resume without runId", {"argv": ["t"], "resume": {}}, "spec.resume"),
    ]

    def test_each_bad_spec_is_a_usage_error_naming_the_field(self):
        for label, spec, field in self.CASES:
            with self.subTest(label):
                with self.assertRaises(UsageError) as cm:
                    normalize_spec(spec, RUN)
                self.assertIn(field, str(cm.exception))


class Interruption(unittest.TestCase):
    def test_defaults(self):
        self.assertIsNone(normalize_interruption(None))
        self.assertEqual(normalize_interruption({}), {"imdsEndpoint": "http://169.254.169.254", "pollMs": 500,
                                                      "noticeWindowMs": 120000, "reserveMs": 20000, "signal": "SIGTERM"})

    def test_signal_names_and_endpoint(self):
        out = normalize_interruption({"signal": "usr1", "imdsEndpoint": "http://127.0.0.1:9/"})
        self.assertEqual(out["signal"], "SIGUSR1")
        self.assertEqual(out["imdsEndpoint"], "http://127.0.0.1:9")
        for bad in ({"signal": "SIGNOPE"}, {"signal": "SIG_DFL"}, {"signal": 15}, {"imdsEndpoint": "http://h/path"}, {"imdsEndpoint": "ftp://h"}, []):
            with self.subTest(bad=bad):
                self.assertRaises(UsageError, normalize_interruption, bad)


class LaunchSecrets(unittest.TestCase):
    def test_shapes(self):
        self.assertIsNone(check_launch_secrets(None))
        self.assertEqual(check_launch_secrets({"aws": None}), {})
        self.assertEqual(check_launch_secrets({"aws": {"accessKeyId": "AK", "secretAccessKey": "SK"}}),
                         {"aws": {"accessKeyId": "AK", "secretAccessKey": "SK", "sessionToken": None}})

    def test_errors_never_quote_values(self):
        for bad in ({"gcp": {}}, {"aws": {"accessKeyId": "AKSECRETVALUE"}}, {"aws": {"accessKeyId": "AKSECRETVALUE", "secretAccessKey": 5}}):
            with self.subTest(bad=bad):
                with self.assertRaises(UsageError) as cm:
                    check_launch_secrets(bad)
                self.assertNotIn("SECRETVALUE", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
