"""runctl-agent: the machine-side supervisor of one runctl run.

Standard library only, Python >= 3.8. The contract with the TypeScript side is
docs/agent-protocol.md: every command prints JSON on stdout; the run itself is driven by a detached
daemon (`supervise`) that writes everything to files in the run directory, so no client connection
ever has to stay up.

This package is built into one file, a zipapp (scripts/embed-agent.mjs), which machines run as
`python3 runctl-agent-<sha>.pyz <command> ...`; cli.entry is its entry point.
"""
