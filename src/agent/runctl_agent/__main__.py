"""`python3 -m runctl_agent <command>` or `python3 <this folder> <command>`: the agent run from a
source checkout, with the same entry point as the built .pyz (cli.entry)."""

import os
import sys

if __package__:
    from .cli import entry
else:
    # Run as a folder: sys.path[0] is this folder, whose module names could shadow the standard
    # library's; the folder above makes the package importable by its name instead.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from runctl_agent.cli import entry

entry()
