"""runctl-agent: the machine-side supervisor of one runctl run.

Standard library only, Python >= 3.8. The contract with the TypeScript side is
docs/agent-protocol.md: every command prints JSON on stdout; the run itself is driven by a detached
daemon (`supervise`) that writes everything to files in the run directory, so no client connection
ever has to stay up.

This package is built into one file, a zipapp (scripts/embed-agent.mjs), which runctl unpacks on
each machine into `runctl-agent-<sha>/` with its bytecode (decision 0029) and runs as
`python3 runctl-agent-<sha>/__main__.py <command> ...`; cli.entry is its entry point.
"""
