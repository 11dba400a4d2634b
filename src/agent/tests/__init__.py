"""Unit tests of the agent package's modules (stdlib unittest; `npm run test:agent`)."""
