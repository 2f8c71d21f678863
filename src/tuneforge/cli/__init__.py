"""The `tuneforge` command line: one thin module per verb (parse -> config -> library call)."""
