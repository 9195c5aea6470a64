"""A live, read-only web view of campaign archives: `eplb-evolve ui [RUN ...]`.

`queries` reads an archive through read-only SQLite connections (a running campaign is never locked
out), `transcripts` finds the prompt and reply behind a program, `server` answers JSON and serves the
page from `static/` (plain HTML and JavaScript with vendored libraries, no build step), and `cli`
registers the command.
"""
