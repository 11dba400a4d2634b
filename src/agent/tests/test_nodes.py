"""spec.nodes: validation, the environment of each rank and the trainer's argv (torchrun or none)."""

import os
import unittest

from runctl_agent.constants import UsageError
from runctl_agent.nodes import interface_of, node_env, normalize_nodes, trainer_argv
from runctl_agent.spec import normalize_spec

RUN = "/srv/runctl/runs/r1"
ADDRS = ["198.51.100.10", "198.51.100.11"]  # TEST-NET-2: on no interface of this machine


def nodes(**over):
    v = {"rank": 0, "count": 2, "procsPerNode": 1, "masterAddr": ADDRS[0], "masterPort": 29500, "addrs": list(ADDRS),
         "launcher": "torchrun"}
    v.update(over)
    return {k: x for k, x in v.items() if x is not DROP}


DROP = object()


class NodesValidation(unittest.TestCase):
    def test_null_is_one_node(self):
        self.assertIsNone(normalize_spec({"argv": ["t.py"]}, RUN)["nodes"])
        self.assertIsNone(normalize_spec({"argv": ["t.py"], "nodes": None}, RUN)["nodes"])

    def test_a_full_spec_is_kept(self):
        self.assertEqual(normalize_spec({"argv": ["t.py"], "nodes": nodes(rank=1)}, RUN)["nodes"], nodes(rank=1))

    def test_defaults(self):
        got = normalize_nodes({"rank": 1, "count": 2, "addrs": ["a-host", "b-host"]})
        self.assertEqual(got, {"rank": 1, "count": 2, "procsPerNode": 1, "masterAddr": "a-host", "masterPort": 29500,
                               "addrs": ["a-host", "b-host"], "launcher": "torchrun"})

    def test_master_addr_may_differ_from_rank_0s(self):
        self.assertEqual(normalize_nodes(nodes(masterAddr="fd00::1"))["masterAddr"], "fd00::1")

    CASES = [
        ("not an object", [1], "spec.nodes must be an object or null"),
        ("unknown field", nodes(procPerNode=2), "unknown field procPerNode"),
        ("no count", nodes(count=DROP), "spec.nodes.count must be an integer >= 1, got None"),
        ("count 0", nodes(count=0, addrs=[]), "spec.nodes.count must be an integer >= 1, got 0"),
        ("count true", nodes(count=True), "spec.nodes.count must be an integer"),
        ("no rank", nodes(rank=DROP), "spec.nodes.rank must be an integer >= 0, got None"),
        ("negative rank", nodes(rank=-1), "spec.nodes.rank must be an integer >= 0, got -1"),
        ("rank = count", nodes(rank=2), "spec.nodes.rank must be below spec.nodes.count (2), got 2"),
        ("float rank", nodes(rank=1.0), "spec.nodes.rank must be an integer >= 0, got 1.0"),
        ("procs 0", nodes(procsPerNode=0), "spec.nodes.procsPerNode must be an integer >= 1, got 0"),
        ("procs string", nodes(procsPerNode="2"), "spec.nodes.procsPerNode must be an integer >= 1, got '2'"),
        ("no addrs", nodes(addrs=DROP), "spec.nodes.addrs must list one address per node (2), rank 0 first, got None"),
        ("too few addrs", nodes(addrs=ADDRS[:1]), "spec.nodes.addrs must list one address per node (2)"),
        ("bad addr", nodes(addrs=[ADDRS[0], "-oProxy=x"]), "spec.nodes.addrs[1] must be an IP address or a host name, got '-oProxy=x'"),
        ("addr with a space", nodes(addrs=[ADDRS[0], "a b"]), "spec.nodes.addrs[1] must be an IP address or a host name"),
        ("empty addr", nodes(addrs=["", ADDRS[1]]), "spec.nodes.addrs[0] must be an IP address or a host name, got ''"),
        ("bad master", nodes(masterAddr=5), "spec.nodes.masterAddr must be an IP address or a host name, got 5"),
        ("port 0", nodes(masterPort=0), "spec.nodes.masterPort must be an integer 1..65535, got 0"),
        ("port too big", nodes(masterPort=65536), "spec.nodes.masterPort must be an integer 1..65535, got 65536"),
        ("port string", nodes(masterPort="29500"), "spec.nodes.masterPort must be an integer 1..65535"),
        ("launcher", nodes(launcher="mpirun"), "spec.nodes.launcher must be one of torchrun, none, got 'mpirun'"),
    ]

    def test_rejections(self):
        for label, value, message in self.CASES:
            with self.subTest(label):
                with self.assertRaises(UsageError) as cm:
                    normalize_spec({"argv": ["t.py"], "nodes": value}, RUN)
                self.assertIn(message, str(cm.exception))

    def test_a_container_on_several_nodes_needs_the_host_network(self):
        spec = {"argv": ["t.py"], "nodes": nodes(), "container": {"image": "img", "network": "none"}}
        with self.assertRaises(UsageError) as cm:
            normalize_spec(spec, RUN)
        self.assertIn('spec.container.network must be "host" for a run on several nodes, got none', str(cm.exception))
        spec["container"]["network"] = "host"
        self.assertEqual(normalize_spec(spec, RUN)["nodes"]["count"], 2)
        one = {"argv": ["t.py"], "nodes": nodes(count=1, addrs=ADDRS[:1]), "container": {"image": "img", "network": "none"}}
        self.assertEqual(normalize_spec(one, RUN)["container"]["network"], "none")


class NodeEnvAndArgv(unittest.TestCase):
    def test_one_node(self):
        self.assertEqual(node_env(None, {}), {"RUNCTL_NODE_RANK": "0", "RUNCTL_NUM_NODES": "1"})
        self.assertEqual(trainer_argv("/venv/bin/python", ["train.py", "--lr=0.1"], None),
                         ["/venv/bin/python", "-u", "train.py", "--lr=0.1"])

    def test_each_rank_under_torchrun(self):
        for rank in (0, 1):
            with self.subTest(rank=rank):
                n = normalize_nodes(nodes(rank=rank, procsPerNode=3, masterPort=29611))
                self.assertEqual(node_env(n, {"WANDB_MODE": "offline"}), {
                    "RUNCTL_NODE_RANK": str(rank), "RUNCTL_NUM_NODES": "2", "RUNCTL_MASTER_ADDR": "198.51.100.10",
                    "RUNCTL_MASTER_PORT": "29611", "RUNCTL_NODE_ADDRS": "198.51.100.10,198.51.100.11",
                    "PET_NNODES": "2", "PET_NODE_RANK": str(rank), "PET_MASTER_ADDR": "198.51.100.10",
                    "PET_MASTER_PORT": "29611", "PET_NPROC_PER_NODE": "3", "PET_REDIRECTS": "9:0", "PET_TEE": "9:0",
                })
                self.assertEqual(trainer_argv("python3", ["train.py", "--lr=0.1"], n), [
                    "python3", "-u", "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "3",
                    "--node_rank", str(rank), "--master_addr", "198.51.100.10", "--master_port", "29611",
                    "--monitor_interval", "1", "train.py", "--lr=0.1"])

    def test_launcher_none_runs_the_script_itself_with_the_same_env(self):
        n = normalize_nodes(nodes(rank=1, launcher="none"))
        self.assertEqual(trainer_argv("python3", ["train.py"], n), ["python3", "-u", "train.py"])
        env = node_env(n, {})
        self.assertEqual((env["RUNCTL_NODE_RANK"], env["PET_NODE_RANK"], env["PET_NNODES"]), ("1", "1", "2"))

    def test_gloo_gets_the_interface_that_holds_this_nodes_address(self):
        n = normalize_nodes(nodes(rank=1, addrs=["198.51.100.10", "127.0.0.1"]))
        self.assertEqual(interface_of("127.0.0.1"), "lo")
        self.assertEqual(interface_of("localhost"), "lo")
        self.assertIsNone(interface_of("198.51.100.11"))
        self.assertEqual(node_env(n, {})["GLOO_SOCKET_IFNAME"], "lo")
        self.assertNotIn("GLOO_SOCKET_IFNAME", node_env(n, {"GLOO_SOCKET_IFNAME": "eth1"}))
        self.assertNotIn("GLOO_SOCKET_IFNAME", node_env(normalize_nodes(nodes(rank=0, addrs=["198.51.100.10", "127.0.0.1"])), {}))

    def test_the_users_redirects_win(self):
        n = normalize_nodes(nodes())
        env = node_env(n, {"PET_REDIRECTS": "3", "PET_TEE": None})
        self.assertNotIn("PET_REDIRECTS", env)
        self.assertNotIn("PET_TEE", env)


class SupervisorEnv(unittest.TestCase):
    """base_env and container_env carry the same node variables."""

    def _sup(self, spec):
        from runctl_agent.supervisor import Supervisor
        sup = Supervisor(RUN)
        sup.spec = normalize_spec(spec, RUN)
        return sup

    def test_host_env(self):
        sup = self._sup({"argv": ["t.py"], "nodes": nodes(rank=1), "env": {"PET_TEE": "1", "RUNCTL_NODE_RANK": "7"}})
        env = sup.base_env()
        self.assertEqual((env["RUNCTL_NODE_RANK"], env["RUNCTL_NUM_NODES"], env["PET_NODE_RANK"]), ("1", "2", "1"))
        self.assertEqual((env["PET_REDIRECTS"], env["PET_TEE"]), ("9:0", "1"))
        single = self._sup({"argv": ["t.py"]}).base_env()
        self.assertEqual((single["RUNCTL_NODE_RANK"], single["RUNCTL_NUM_NODES"]), ("0", "1"))
        self.assertFalse([k for k in single if k.startswith("PET_") and k not in os.environ])
        self.assertNotIn("RUNCTL_MASTER_ADDR", single)

    def test_container_env(self):
        spec = {"argv": ["t.py"], "nodes": nodes(rank=1), "container": {"image": "img", "env": {"PET_TEE": "2"}}}
        env = self._sup(spec).container_env(None)  # without a venv it needs no runtime
        self.assertEqual((env["RUNCTL_NODE_RANK"], env["RUNCTL_NODE_ADDRS"], env["PET_MASTER_ADDR"]),
                         ("1", "198.51.100.10,198.51.100.11", "198.51.100.10"))
        self.assertEqual((env["PET_REDIRECTS"], env["PET_TEE"]), ("9:0", "2"))


if __name__ == "__main__":
    unittest.main()
