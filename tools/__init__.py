"""Developer tools of the repository (not installed): the generators of docs/api.md and docs/cli.md."""
